"""Drives profile-registry through a rolling restart with the grpcio client.

Usage: rolling_client.py --target-file F --stop-file S --proto-dir PROTO_DIR [--writers 4]

Each writer thread updates its own profile (roll-py<i>) with expected_revision, over and over. Before
every call it reads HOST:PORT from --target-file (the test rewrites it when the new server is up) and
reconnects when it changed. It prints `running` once the first call has succeeded, and when
--stop-file appears it prints one JSON line: {"codes": {CODE: count}, "acked": {name: revision},
"ok_by_target": {HOST:PORT: successful calls}, "unexpected": [first few "CODE: message" of calls that
failed other than UNAVAILABLE/ABORTED]}.
"""
import argparse
import json
import os
import sys
import threading
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from profile_client import load_stubs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target-file", required=True)
    ap.add_argument("--stop-file", required=True)
    ap.add_argument("--proto-dir", required=True)
    ap.add_argument("--writers", type=int, default=4)
    a = ap.parse_args()
    pb, rpc = load_stubs(a.proto_dir)

    lock = threading.Lock()
    codes: dict = {}
    ok_by_target: dict = {}
    acked: dict = {}
    unexpected: list = []
    first_ok = threading.Event()

    def count(code: str) -> None:
        with lock:
            codes[code] = codes.get(code, 0) + 1

    def writer(i: int) -> None:
        name = f"roll-py{i}"
        addr, channel, stub = None, None, None
        while not os.path.exists(a.stop_file):
            with open(a.target_file) as f:
                target = f.read().strip()
            if target and target != addr:
                if channel is not None:
                    channel.close()
                addr, channel = target, grpc.insecure_channel(target)
                stub = rpc.ProfileServiceStub(channel)
            with lock:
                rev = acked.get(name, 0)
            req = pb.UpdateProfileRequest(
                profile=pb.Profile(name=name, llm=pb.LlmConfig(model=f"m-{rev + 1}")),
                allow_missing=True,
                expected_revision=rev,
            )
            try:
                reply = stub.UpdateProfile(req, timeout=10)
                with lock:
                    acked[name] = reply.revision
                    ok_by_target[target] = ok_by_target.get(target, 0) + 1
                count("OK")
                first_ok.set()
            except grpc.RpcError as e:
                code = e.code().name
                count(code)
                if e.code() == grpc.StatusCode.ABORTED:
                    # An unacknowledged write landed before the restart: learn its revision.
                    try:
                        got = stub.GetProfile(pb.GetProfileRequest(name=name), timeout=10)
                        with lock:
                            acked[name] = got.revision
                    except grpc.RpcError:
                        pass
                elif e.code() != grpc.StatusCode.UNAVAILABLE:
                    with lock:
                        if len(unexpected) < 10:
                            unexpected.append(f"{code}: {e.details()}")
                time.sleep(0.02)
        if channel is not None:
            channel.close()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(a.writers)]
    for t in threads:
        t.start()
    if first_ok.wait(timeout=30):
        print("running", flush=True)
    for t in threads:
        t.join()
    print(json.dumps({"codes": codes, "acked": acked, "ok_by_target": ok_by_target, "unexpected": unexpected}), flush=True)


if __name__ == "__main__":
    main()
