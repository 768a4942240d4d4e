"""End-to-end check of profile_registry_client.RegistryProfileStore against a running server and the
real OpenHands SDK: it must behave as the SDK's own LLMProfileStore wherever the SDK uses one.

Run with the Python of an openhands-sdk (1.58.2) environment that can import the installed package:

    python test_adapter.py --server 127.0.0.1:50051 [--token T] [--masked-token T2]

--token needs the writer and secrets roles (or admin) when the server has tokens; --masked-token, a
token with writer but without secrets, also checks that keys stay masked for it (without it, a store
made with reveal_secrets=False stands in). Prints one line per step; exits 1 at the first failure.
Profile names get a random suffix, so runs may repeat against one server.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import traceback
import uuid
import warnings
from pathlib import Path

os.environ.setdefault("OPENHANDS_SUPPRESS_BANNER", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

SECRET = "sk-adapter-test-0123456789"


def step(message: str) -> None:
    print(f"ok: {message}", flush=True)


def raises(exc_type: type[BaseException], fn, *args, **kwargs) -> BaseException:
    """Calls fn and returns the exception it raised, failing unless it is an exc_type."""
    try:
        fn(*args, **kwargs)
    except exc_type as e:
        return e
    except BaseException as e:  # noqa: BLE001 - reported, then the run fails
        raise AssertionError(f"{fn.__name__} raised {type(e).__name__}: {e}, expected {exc_type.__name__}") from e
    raise AssertionError(f"{fn.__name__} raised nothing, expected {exc_type.__name__}")


def dump(llm) -> dict:
    """Everything in an LLM, keys included, to compare two LLMs field by field."""
    return llm.model_dump(mode="json", context={"expose_secrets": True})


def same(a, b, what: str) -> None:
    assert dump(a) == dump(b), f"{what}: LLMs differ:\n{dump(a)}\n{dump(b)}"
    assert a == b, f"{what}: LLMs compare unequal"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True, help="HOST:PORT, http://HOST:PORT or https://HOST:PORT")
    parser.add_argument("--token", default=os.environ.get("REGISTRY_TOKEN"))
    parser.add_argument("--masked-token", help="a token with writer but without secrets")
    parser.add_argument("--ca-file")
    args = parser.parse_args()

    from pydantic import SecretStr

    from openhands.sdk.llm.llm import LLM
    from openhands.sdk.llm.llm_profile_store import (
        LLMProfileLoader,
        LLMProfileMutator,
        LLMProfileStore,
        ProfileLimitExceeded,
    )
    from openhands.sdk.utils.cipher import Cipher

    import grpc
    from profile_registry_client import RegistryProfileStore
    from profile_registry_client._stubs.profileregistry.v1 import profile_pb2 as pb
    from profile_registry_client._stubs.profileregistry.v1 import profile_pb2_grpc as pb_grpc

    store = RegistryProfileStore(args.server, token=args.token, ca_file=args.ca_file)
    tag = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="adapter-test-"))
    sdk = LLMProfileStore(tmp / "profiles")

    # Raw stubs for what the adapter does not do (ImportProfiles of a file the SDK wrote).
    address = args.server.removeprefix("http://")
    metadata = (("authorization", f"Bearer {args.token}"),) if args.token else ()
    raw = pb_grpc.ProfileServiceStub(grpc.insecure_channel(address)) if "https://" not in args.server else None

    def import_file(name: str, text: str) -> None:
        assert raw is not None, "importing SDK files needs a plaintext target"
        reply = raw.ImportProfiles(
            pb.ImportProfilesRequest(
                documents=[pb.ProfileDocument(name=name, json=text)],
                on_conflict=pb.ImportProfilesRequest.OVERWRITE,
            ),
            metadata=metadata,
            timeout=30,
        )
        assert reply.results[0].outcome in (pb.ImportResult.CREATED, pb.ImportResult.UPDATED), reply

    # 1. The SDK's protocols, which resolve_agent_profile and profile_refs type against.
    assert isinstance(store, LLMProfileLoader), "not an LLMProfileLoader"
    assert isinstance(store, LLMProfileMutator), "not an LLMProfileMutator"
    step("isinstance LLMProfileLoader and LLMProfileMutator")

    # 2. save(include_secrets=True) then load gives the same LLM, key included.
    full = LLM(
        model="anthropic/claude-sonnet-4-5-20250929",
        api_key=SecretStr(SECRET),
        base_url="https://api.example.com",
        temperature=0.2,
        top_k=40.0,
        max_output_tokens=4096,
        reasoning_effort="high",
        usage_id="agent",
        litellm_extra_body={"metadata": {"team": "adapter"}},
        extra_headers={"X-Trace": "\u00e9t\u00e9"},
    )
    name = f"adapter-{tag}"
    store.save(name, full, include_secrets=True)
    loaded = store.load(name)
    assert loaded.api_key is not None and loaded.api_key.get_secret_value() == SECRET, "key lost"
    same(loaded, full, "save(include_secrets=True) then load")
    step("save(include_secrets=True) then load round trip is equal, key included")

    # 3. load equals LLMProfileStore.load of the same file, in both secret forms the SDK writes.
    for include_secrets in (True, False):
        sdk_name = f"sdk-file-{include_secrets}-{tag}"
        sdk.save(sdk_name, full, include_secrets=include_secrets)
        text = (sdk.base_dir / f"{sdk_name}.json").read_text()
        import_file(sdk_name, text)
        exported = raw.ExportProfiles(
            pb.ExportProfilesRequest(names=[sdk_name], secrets=pb.ExportProfilesRequest.PLAINTEXT),
            metadata=metadata,
            timeout=30,
        ).documents[0]
        assert exported.json == text, f"registry export differs from the SDK's file:\n{exported.json}\n{text}"
        what = f"load vs LLMProfileStore.load (include_secrets={include_secrets})"
        same(store.load(sdk_name), sdk.load(sdk_name), what)
        same(store.load(f"{sdk_name}.json"), sdk.load(f"{sdk_name}.json"), "load of NAME.json")
    step("load equals LLMProfileStore.load of the SDK's own file (plaintext and redacted)")

    # 4. save writes the JSON the SDK writes: the registry exports it byte for byte.
    minimal = LLM(model="gpt-4o", usage_id="agent")
    store.save(f"minimal-{tag}", minimal)
    sdk.save(f"minimal-{tag}", minimal)
    exported = raw.ExportProfiles(pb.ExportProfilesRequest(names=[f"minimal-{tag}"]), metadata=metadata, timeout=30)
    assert exported.documents[0].json == (sdk.base_dir / f"minimal-{tag}.json").read_text(), "save's JSON differs"
    same(store.load(f"minimal-{tag}"), sdk.load(f"minimal-{tag}"), "minimal profile")
    step("save sends the SDK's JSON (exported back byte for byte)")

    # 5. save(include_secrets=False) sends the mask, which keeps the stored key (the registry's rule).
    cooler = full.model_copy(update={"temperature": 0.7})
    store.save(name, cooler)
    reloaded = store.load(name)
    assert reloaded.temperature == 0.7, reloaded.temperature
    assert reloaded.api_key is not None and reloaded.api_key.get_secret_value() == SECRET, "mask did not keep the key"
    fresh = f"nokey-{tag}"
    store.save(fresh, full)  # a new profile has no stored key to keep: the SDK's load gives none
    assert store.load(fresh).api_key is None, "a masked save of a new profile must store no key"
    same(store.load(fresh), sdk.load(f"sdk-file-False-{tag}"), "new profile saved without secrets")
    keyless = full.model_copy(update={"api_key": None})
    store.save(fresh, keyless, include_secrets=True)
    assert store.load(fresh).api_key is None
    step("save(include_secrets=False) keeps the stored key; a new profile gets none")

    # 6. cipher passes through as in the SDK (plaintext keys stay as they are).
    same(store.load(name, cipher=Cipher("an-unrelated-key")), reloaded, "load with cipher")
    step("load(cipher=...) as the SDK's")

    # 7. list: file names as the SDK's list gives them.
    listing = store.list()
    assert isinstance(listing, list) and all(isinstance(n, str) for n in listing), listing
    assert f"{name}.json" in listing and f"minimal-{tag}.json" in listing, listing
    assert all(n.endswith(".json") for n in listing), listing
    assert listing == sorted(listing), "listing is in name order"
    assert set(sdk.list()) <= set(listing), "every profile saved in both stores is listed"
    step(f"list gives file names ({len(listing)} profiles)")

    # 8. Errors as the SDK's.
    e = raises(FileNotFoundError, store.load, f"missing-{tag}")
    assert f"missing-{tag}" in str(e) and "Available profiles" in str(e), e
    raises(FileNotFoundError, sdk.load, f"missing-{tag}")
    for bad in ("../etc", "", ".hidden", "a/b", "x" * 65):
        raises(ValueError, store.load, bad)
        raises(ValueError, store.save, bad, minimal)
        raises(ValueError, store.delete, bad)
        raises(ValueError, store.rename, name, bad)
    store.delete(f"missing-{tag}")  # no error, as the SDK
    raises(FileExistsError, store.rename, name, f"minimal-{tag}")
    raises(FileExistsError, sdk.rename, f"sdk-file-True-{tag}", f"minimal-{tag}")
    raises(FileNotFoundError, store.rename, f"missing-{tag}", f"other-{tag}")
    raises(FileNotFoundError, store.rename, f"missing-{tag}", f"missing-{tag}")
    store.rename(name, f"{name}.json")  # same profile: a no-op
    assert f"{name}.json" in store.list()
    assert SECRET not in str(e)
    step("errors: FileNotFoundError, ValueError, FileExistsError; delete of a missing profile is a no-op")

    # 9. rename and delete.
    renamed = f"renamed-{tag}"
    store.rename(name, renamed)
    assert f"{renamed}.json" in store.list() and f"{name}.json" not in store.list()
    assert store.load(renamed).api_key.get_secret_value() == SECRET, "rename keeps the key"
    store.rename(renamed, name)
    store.delete(fresh)
    raises(FileNotFoundError, store.load, fresh)
    step("rename and delete")

    # 10. max_profiles, as the SDK's save.
    count = len(store.list())
    raises(ProfileLimitExceeded, store.save, f"over-{tag}", minimal, max_profiles=count)
    store.save(f"minimal-{tag}", minimal, max_profiles=count)  # overwriting is not creating
    step("save(max_profiles=...) raises ProfileLimitExceeded for a new profile only")

    # 11. resolve_agent_profile with the adapter as its LLM store.
    from openhands.sdk.profiles.agent_profile import OpenHandsAgentProfile
    from openhands.sdk.profiles.resolver import ProfileNotFound, resolve_agent_profile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # deprecated in 1.55, still the documented entry
        agent = OpenHandsAgentProfile(name=f"agent-{tag}", llm_profile_ref=name)
        settings = resolve_agent_profile(agent, llm_store=store, mcp_config={}, available_skills=None)
        same(settings.llm, store.load(name), "resolve_agent_profile's LLM")
        dangling = OpenHandsAgentProfile(name=f"dangling-{tag}", llm_profile_ref=f"missing-{tag}")
        raises(ProfileNotFound, resolve_agent_profile, dangling, llm_store=store, mcp_config={}, available_skills=None)
    step("resolve_agent_profile(llm_store=adapter) resolves, and raises ProfileNotFound for a missing one")

    # 12. profile_refs: guarded delete and cascading rename through the adapter.
    from openhands.sdk.profiles.agent_profile_store import AgentProfileStore
    from openhands.sdk.profiles.profile_refs import ProfileReferenced, delete_llm_profile, rename_llm_profile

    agents = AgentProfileStore(tmp / "agent-profiles")
    agents.save(agent)
    e = raises(ProfileReferenced, delete_llm_profile, agents, store, name)
    assert e.referrers == [agent.name], e.referrers
    assert f"{name}.json" in store.list(), "a referenced profile must survive"
    moved = f"moved-{tag}"
    assert rename_llm_profile(agents, store, name, moved) == [agent.name]
    assert agents.load(agent.name).llm_profile_ref == moved
    assert f"{moved}.json" in store.list() and f"{name}.json" not in store.list()
    raises(FileExistsError, rename_llm_profile, agents, store, moved, f"minimal-{tag}")
    assert agents.load(agent.name).llm_profile_ref == moved, "a failed rename must not rewrite refs"
    agents.delete(agent.name)
    delete_llm_profile(agents, store, moved)
    assert f"{moved}.json" not in store.list()
    step("profile_refs.delete_llm_profile and rename_llm_profile with the adapter")

    # 13. Without the secrets role keys stay masked, and load gives what the SDK gives for a redacted file.
    store.save(name, full, include_secrets=True)
    if args.masked_token:
        masked = RegistryProfileStore(args.server, token=args.masked_token)
        strict = RegistryProfileStore(args.server, token=args.masked_token, reveal_secrets=True)
        e = raises(PermissionError, strict.load, name)
        assert SECRET not in str(e)
        # A writer without secrets can still save; its masked key keeps the stored one.
        masked.save(name, full.model_copy(update={"temperature": 0.5}))
        assert store.load(name).api_key.get_secret_value() == SECRET
        store.save(name, full, include_secrets=True)
    else:
        masked = RegistryProfileStore(args.server, token=args.token, reveal_secrets=False)
    seen = masked.load(name)
    assert seen.api_key is None, "a key was revealed without the secrets role"
    assert SECRET not in json.dumps(dump(seen)), "the key leaked into the masked LLM"
    same(seen, sdk.load(f"sdk-file-False-{tag}"), "masked load vs the SDK's redacted file")
    who = "a token without secrets" if args.masked_token else "reveal_secrets=False"
    step(f"masked: {who} loads no key, as the SDK loads a redacted file")

    # 14. What the SDK's callers catch: a registry failure is an OSError (the launch path catches
    # OSError and ValueError), an outage a ConnectionError and a TimeoutError (retryable there);
    # a token read from a mounted file keeps working with its newline; a bad one is a ValueError.
    from profile_registry_client import RegistryError, RegistryUnavailable

    assert issubclass(RegistryError, OSError)
    assert issubclass(RegistryUnavailable, ConnectionError) and issubclass(RegistryUnavailable, TimeoutError)
    with RegistryProfileStore("127.0.0.1:9", timeout=5) as down:
        raises(TimeoutError, down.load, name)
    if args.token:
        with RegistryProfileStore(args.server, token=args.token + "\n") as newline:
            assert newline.load(name).model == full.model
    e = raises(ValueError, RegistryProfileStore, args.server, token="two words")
    assert "two words" not in str(e)
    raises(ValueError, store.load, "abc\n")
    step("errors callers catch: RegistryError is an OSError, an outage a TimeoutError; tokens trimmed")

    # 15. A profile linked to a provider connection resolves by default from the SDK's own
    # connection store (under $OH_PERSISTENCE_DIR), as a bare LLMProfileStore does.
    from openhands.sdk.llm.provider_connection_store import ProviderConnection, ProviderConnectionStore

    with tempfile.TemporaryDirectory() as home:
        os.environ["OH_PERSISTENCE_DIR"] = home
        try:
            ProviderConnectionStore(Path(home) / "provider-connections").create(
                ProviderConnection(
                    id="shared",
                    display_name="Shared",
                    api_key=SecretStr("sk-shared-key"),
                    base_url="https://shared.example/v1",
                    created_at=1,
                    updated_at=1,
                )
            )
            linked = full.model_copy(update={"provider_connection_id": "shared"})
            sdk_home = LLMProfileStore(Path(home) / "profiles")
            sdk_home.save(f"linked-{tag}", linked, include_secrets=True)
            store.save(f"linked-{tag}", linked, include_secrets=True)
            with RegistryProfileStore(args.server, token=args.token) as fresh:
                resolved = fresh.load(f"linked-{tag}")
            same(resolved, sdk_home.load(f"linked-{tag}"), "a profile linked to a connection")
            assert resolved.api_key.get_secret_value() == "sk-shared-key", "the connection's key wins"
            unresolved = RegistryProfileStore(args.server, token=args.token, provider_store=None)
            assert unresolved.load(f"linked-{tag}").provider_connection_id == "shared"
            unresolved.close()
        finally:
            del os.environ["OH_PERSISTENCE_DIR"]
    store.delete(f"linked-{tag}")
    step("provider_connection_id resolved from the SDK's connection store by default")

    for n in (name, f"minimal-{tag}", f"sdk-file-True-{tag}", f"sdk-file-False-{tag}"):
        store.delete(n)
    store.close()
    print("all adapter checks passed", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:  # noqa: BLE001 - any failure is a failed check
        traceback.print_exc()
        print("FAILED", flush=True)
        sys.exit(1)
