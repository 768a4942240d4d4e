"""Regenerate (or, with --check, verify) the gRPC stubs checked in under
profile_registry_client/_stubs/ from the repository's proto/ folder.

    python3 tests/clients/python/generate_stubs.py          # rewrite the stubs
    python3 tests/clients/python/generate_stubs.py --check  # exit 1 when they drifted from proto/

Needs grpcio-tools (`python3 -m pip install grpcio-tools`). The generated files are
post-processed so they import each other relatively (`from . import profile_pb2`), which lets
them live inside the package without any sys.path trick.

The check is meant to fail only when proto/ changed, not when a newer grpcio-tools is
installed: the lines that carry the generator's version (the "Protobuf Python Version" comment,
the runtime version check, GRPC_GENERATED_VERSION) are ignored, and when the rest of a file still
differs the check falls back to what the file means: the embedded file descriptor for *_pb2.py,
the rpc paths and message types for *_pb2_grpc.py. Only a difference there is drift.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
PROTO_DIR = REPO / "proto"
STUBS = HERE / "profile_registry_client" / "_stubs"
# The proto package path, which is also the folder layout protoc generates under STUBS.
PACKAGE_DIR = Path("profileregistry") / "v1"

HEADER = (
    "# Generated from proto/{source} by tests/clients/python/generate_stubs.py: do not edit,\n"
    "# regenerate (imports made relative so the stubs work inside profile_registry_client).\n"
)
INIT_DOCSTRINGS = {
    Path("__init__.py"): '"""gRPC stubs generated from proto/ (see generate_stubs.py); not a public API."""\n',
    Path("profileregistry") / "__init__.py": '"""Stubs of the proto package profileregistry."""\n',
    PACKAGE_DIR / "__init__.py": '"""Stubs of the proto package profileregistry.v1."""\n',
}

# Lines that name the generator's (or the runtime's) version rather than the proto's content.
VERSION_LINE = re.compile(r"^# Protobuf Python Version: .*$", re.M)
RUNTIME_CHECK = re.compile(r"_runtime_version\.ValidateProtobufRuntimeVersion\([^)]*\)", re.S)
GRPC_VERSION = re.compile(r"^GRPC_GENERATED_VERSION = .*$", re.M)
SERIALIZED = re.compile(r"AddSerializedFile\((b'(?:[^'\\]|\\.)*')\)", re.S)
RPC_PATH = re.compile(r"'(/profileregistry\.v1\.[A-Za-z]+/[A-Za-z]+)'")
MESSAGE_REF = re.compile(r"profileregistry_dot_v1_dot_\w+__pb2\.\w+\.(?:SerializeToString|FromString)")
ABSOLUTE_IMPORT = re.compile(r"^from profileregistry\.v1 import (\w+_pb2) as", re.M)


def generate(out: Path) -> None:
    """Runs protoc (from grpcio-tools) on every proto/ file into `out`, then post-processes."""
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError:
        sys.exit("generate_stubs.py needs grpcio-tools: python3 -m pip install grpcio-tools")
    protos = sorted(p.relative_to(PROTO_DIR).as_posix() for p in (PROTO_DIR / PACKAGE_DIR).glob("*.proto"))
    if not protos:
        sys.exit(f"no .proto files under {PROTO_DIR / PACKAGE_DIR}")
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed on proto/ (its message is above)")
    for path in sorted((out / PACKAGE_DIR).glob("*.py")):
        text = path.read_text()
        text = ABSOLUTE_IMPORT.sub(r"from . import \1 as", text)
        source = (PACKAGE_DIR / path.name.split("_pb2")[0]).as_posix() + ".proto"
        path.write_text(HEADER.format(source=source) + text)
    for rel, doc in INIT_DOCSTRINGS.items():
        (out / rel).write_text(doc)


def stub_files(root: Path) -> dict[Path, str]:
    """The generated files under `root` (relative path -> text), caches left out."""
    if not root.is_dir():
        return {}
    return {
        p.relative_to(root): p.read_text()
        for p in sorted(root.rglob("*.py"))
        if "__pycache__" not in p.parts
    }


def normalize(text: str) -> str:
    """The text without the lines that only name the generator's version."""
    text = VERSION_LINE.sub("# Protobuf Python Version: (ignored)", text)
    text = RUNTIME_CHECK.sub("_runtime_version.ValidateProtobufRuntimeVersion(ignored)", text)
    return GRPC_VERSION.sub("GRPC_GENERATED_VERSION = (ignored)", text)


def descriptor(text: str):
    """The FileDescriptorProto a *_pb2.py embeds, or None when it embeds none."""
    from google.protobuf import descriptor_pb2

    match = SERIALIZED.search(text)
    if match is None:
        return None
    proto = descriptor_pb2.FileDescriptorProto()
    proto.ParseFromString(ast.literal_eval(match.group(1)))
    return proto


def same_meaning(rel: Path, checked_in: str, fresh: str) -> bool:
    """Whether two generations of one file mean the same, whatever the generator's style."""
    if rel.name.endswith("_pb2.py"):
        old, new = descriptor(checked_in), descriptor(fresh)
        return old is not None and old == new
    if rel.name.endswith("_pb2_grpc.py"):

        def meaning(t: str):
            return (sorted(RPC_PATH.findall(t)), sorted(MESSAGE_REF.findall(t)), ABSOLUTE_IMPORT.search(t) is None)

        return meaning(checked_in) == meaning(fresh)
    return False


def check(fresh_root: Path) -> int:
    checked_in, fresh = stub_files(STUBS), stub_files(fresh_root)
    problems: list[str] = []
    notes: list[str] = []
    for rel in sorted(set(checked_in) | set(fresh)):
        if rel not in checked_in:
            problems.append(f"missing: {rel} (proto/ generates it)")
        elif rel not in fresh:
            problems.append(f"stale: {rel} (proto/ no longer generates it)")
        elif normalize(checked_in[rel]) != normalize(fresh[rel]):
            if same_meaning(rel, checked_in[rel], fresh[rel]):
                notes.append(f"{rel}: same content, generated by another grpcio-tools version")
            else:
                diff = difflib.unified_diff(
                    normalize(checked_in[rel]).splitlines(),
                    normalize(fresh[rel]).splitlines(),
                    f"checked in: {rel}",
                    f"from proto/: {rel}",
                    lineterm="",
                    n=1,
                )
                # Long lines (the embedded descriptor) are cut: the diff is a hint, regenerating is the fix.
                shown = [line if len(line) <= 160 else line[:157] + "..." for line in list(diff)[:40]]
                problems.append(f"differs: {rel}\n" + "\n".join(shown))
    for note in notes:
        print(f"note: {note}")
    if problems:
        print(
            "the Python stubs in tests/clients/python/profile_registry_client/_stubs are out of step "
            "with proto/:\n  " + "\n  ".join(problems) + "\n"
            "regenerate them with: python3 tests/clients/python/generate_stubs.py",
            file=sys.stderr,
        )
        return 1
    print(f"stubs match proto/ ({len(checked_in)} files)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on drift")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        if args.check:
            return check(fresh)
        # Replace only the generated files, so a stale stub of a removed .proto goes too.
        for rel in stub_files(STUBS):
            (STUBS / rel).unlink()
        for rel, text in stub_files(fresh).items():
            (STUBS / rel).parent.mkdir(parents=True, exist_ok=True)
            (STUBS / rel).write_text(text)
        print(f"wrote {len(stub_files(fresh))} files under {STUBS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
