"""A Python grpcio client of profile-registry: stubs generated from proto/ at run time.

Usage: profile_client.py --server HOST:PORT --proto-dir PROTO_DIR [--token TOKEN]
(--token, or env REGISTRY_TOKEN, is sent as `authorization: Bearer <token>` when the server has a tokens file.)
Prints one line per step; exits non-zero on the first failed expectation.
"""
import argparse
import atexit
import importlib
import os
import shutil
import sys
import tempfile

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_tools import protoc


def load_stubs(proto_dir: str):
    """Generates the stubs into a temp dir removed at exit; returns (profile_pb2, profile_pb2_grpc)."""
    out = tempfile.mkdtemp(prefix="registry-stubs-")
    atexit.register(shutil.rmtree, out, True)
    generate(proto_dir, out)
    sys.path.insert(0, out)
    return (
        importlib.import_module("profileregistry.v1.profile_pb2"),
        importlib.import_module("profileregistry.v1.profile_pb2_grpc"),
    )


def generate(proto_dir: str, out_dir: str) -> None:
    import grpc_tools

    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    files = []
    for root, _, names in os.walk(proto_dir):
        files += [os.path.join(root, n) for n in names if n.endswith(".proto")]
    args = ["protoc", f"-I{proto_dir}", f"-I{well_known}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}"]
    if protoc.main(args + files) != 0:
        sys.exit("protoc failed")


def expect(cond: bool, what: str) -> None:
    if not cond:
        sys.exit(f"FAILED: {what}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--proto-dir", required=True)
    ap.add_argument("--token", default=os.environ.get("REGISTRY_TOKEN", ""))
    a = ap.parse_args()
    md = [("authorization", f"Bearer {a.token}")] if a.token else None
    pb, rpc = load_stubs(a.proto_dir)

    with grpc.insecure_channel(a.server) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10, metadata=md).status
        expect(status == health_pb2.HealthCheckResponse.SERVING, f"health is {status}")
        print("health SERVING")

        stub = rpc.ProfileServiceStub(ch)
        # Start from a clean slate, so the example can run any number of times against one server.
        for name in ("py-profile", "py-watched"):
            stub.DeleteProfile(pb.DeleteProfileRequest(name=name, allow_missing=True, force=True), timeout=10, metadata=md)
        print("removed earlier runs' profiles")
        llm = pb.LlmConfig(model="openai/gpt-4o", api_key="sk-python-1", temperature=0.3)
        llm.extra.update({"num_retries": 5, "extra_headers": {"X-Team": "Zürich"}})
        created = stub.CreateProfile(pb.CreateProfileRequest(profile=pb.Profile(name="py-profile", llm=llm)), timeout=10, metadata=md)
        expect(created.revision == 1, f"revision {created.revision}")
        print("created revision 1")

        got = stub.GetProfile(pb.GetProfileRequest(name="py-profile"), timeout=10, metadata=md)
        expect(got.llm.api_key == "**********", "api_key should be masked")
        expect(got.llm.extra["extra_headers"]["X-Team"] == "Zürich", "extra kept verbatim")
        print("masked api_key")
        got = stub.GetProfile(pb.GetProfileRequest(name="py-profile", reveal_secrets=True), timeout=10, metadata=md)
        expect(got.llm.api_key == "sk-python-1", "reveal_secrets should reveal")
        print("revealed api_key")

        try:
            stub.GetProfile(pb.GetProfileRequest(name="no-such-profile"), timeout=10, metadata=md)
            expect(False, "GetProfile of a missing profile should fail")
        except grpc.RpcError as e:
            expect(e.code() == grpc.StatusCode.NOT_FOUND, f"got {e.code()}")
            print("NOT_FOUND mapped to grpc.StatusCode.NOT_FOUND")

        # ListProfiles, following next_page_token to the last page.
        names, token = [], ""
        while True:
            page = stub.ListProfiles(pb.ListProfilesRequest(page_size=10, page_token=token), timeout=10, metadata=md)
            for p in page.profiles:
                expect(p.llm.api_key in ("", "**********"), f"listed {p.name} with an unmasked api_key")
                names.append(p.name)
            token = page.next_page_token
            if not token:
                break
        expect("py-profile" in names, f"py-profile not listed: {names}")
        print(f"list has py-profile ({len(names)} profiles)")

        # WatchProfiles: the current profiles first (initial), then live changes. The deadline only
        # bounds this example; a real watcher leaves it open.
        watch = stub.WatchProfiles(pb.WatchProfilesRequest(send_initial=True), timeout=30, metadata=md)
        event = next(e for e in watch if e.name == "py-profile")
        expect(event.type == pb.ProfileEvent.PUT and event.initial, f"initial event {event}")
        print("watch initial PUT py-profile")
        stub.CreateProfile(
            pb.CreateProfileRequest(profile=pb.Profile(name="py-watched", llm=pb.LlmConfig(model="openai/gpt-4o-mini"))),
            timeout=10,
            metadata=md,
        )
        event = next(e for e in watch if e.name == "py-watched")
        expect(event.type == pb.ProfileEvent.PUT and not event.initial and event.revision == 1, f"live event {event}")
        expect(event.profile.llm.model == "openai/gpt-4o-mini", f"live event profile {event.profile}")
        print("watch PUT py-watched")
        watch.cancel()
        try:
            next(watch)
            expect(False, "a cancelled watch should end")
        except grpc.RpcError as e:
            expect(e.code() == grpc.StatusCode.CANCELLED, f"watch ended with {e.code()}")
        print("watch cancelled")


if __name__ == "__main__":
    main()
