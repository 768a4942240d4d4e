"""A Python grpcio client of profile-registry: stubs generated from proto/ at run time.

Usage: profile_client.py --server HOST:PORT --proto-dir PROTO_DIR
Prints one line per step; exits non-zero on the first failed expectation.
"""
import argparse
import importlib
import os
import sys
import tempfile

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_tools import protoc


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
    a = ap.parse_args()
    out = tempfile.mkdtemp()
    generate(a.proto_dir, out)
    sys.path.insert(0, out)
    pb = importlib.import_module("profileregistry.v1.profile_pb2")
    rpc = importlib.import_module("profileregistry.v1.profile_pb2_grpc")

    with grpc.insecure_channel(a.server) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
        expect(status == health_pb2.HealthCheckResponse.SERVING, f"health is {status}")
        print("health SERVING")

        stub = rpc.ProfileServiceStub(ch)
        llm = pb.LlmConfig(model="openai/gpt-4o", api_key="sk-python-1", temperature=0.3)
        llm.extra.update({"num_retries": 5, "extra_headers": {"X-Team": "Zürich"}})
        created = stub.CreateProfile(pb.CreateProfileRequest(profile=pb.Profile(name="py-profile", llm=llm)), timeout=10)
        expect(created.revision == 1, f"revision {created.revision}")
        print("created revision 1")

        got = stub.GetProfile(pb.GetProfileRequest(name="py-profile"), timeout=10)
        expect(got.llm.api_key == "**********", "api_key should be masked")
        expect(got.llm.extra["extra_headers"]["X-Team"] == "Zürich", "extra kept verbatim")
        print("masked api_key")
        got = stub.GetProfile(pb.GetProfileRequest(name="py-profile", reveal_secrets=True), timeout=10)
        expect(got.llm.api_key == "sk-python-1", "reveal_secrets should reveal")
        print("revealed api_key")

        try:
            stub.GetProfile(pb.GetProfileRequest(name="no-such-profile"), timeout=10)
            expect(False, "GetProfile of a missing profile should fail")
        except grpc.RpcError as e:
            expect(e.code() == grpc.StatusCode.NOT_FOUND, f"got {e.code()}")
            print("NOT_FOUND mapped to grpc.StatusCode.NOT_FOUND")


if __name__ == "__main__":
    main()
