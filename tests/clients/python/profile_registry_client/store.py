"""RegistryProfileStore: the OpenHands SDK's ``LLMProfileStore`` API over profile-registry's gRPC API.

Each method keeps the SDK's signature and meaning (what it returns, what it raises), so code
written against the folder-backed store (``resolve_agent_profile``, the ``profile_refs`` helpers,
the agent-server) works unchanged with profiles kept in the registry. The SDK itself is imported
only inside the methods that build or serialize an ``LLM``: this package does not depend on it.
"""

from __future__ import annotations

import json
import re
import warnings
from typing import TYPE_CHECKING, Any

import grpc

from ._stubs.profileregistry.v1 import profile_pb2 as pb
from ._stubs.profileregistry.v1 import profile_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from openhands.sdk.llm.llm import LLM
    from openhands.sdk.llm.provider_connection_store import ProviderConnectionStore
    from openhands.sdk.utils.cipher import Cipher

# The SDK's name rule (openhands.sdk.llm.llm_profile_store.PROFILE_NAME_PATTERN), which the server
# enforces too; checked here first so a bad name fails with the SDK's ValueError before any call.
PROFILE_NAME_REGEX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Largest page the server gives (API.md: page_size at most 1000), so list() makes few calls.
_PAGE_SIZE = 1000
# The default provider_store: the SDK's own, made when first needed.
_SDK_DEFAULT = object()
# How many names a "not found" message lists, as the SDK's does, before it stops.
_LISTED_IN_ERRORS = 50


class RegistryError(OSError):
    """A registry failure with no counterpart among the SDK store's exceptions.

    ``code`` is the gRPC status code name (e.g. ``"FAILED_PRECONDITION"`` when conversations still
    reference a profile being deleted). The message never carries a secret: the server's messages
    never do.
    """

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class RegistryUnavailable(ConnectionError, TimeoutError):
    """The registry cannot be reached (UNAVAILABLE): a ``ConnectionError`` and, as the outage may
    pass, a ``TimeoutError``, which the SDK's launch path treats as worth retrying."""


class RegistryProfileStore:
    """LLM profiles kept in a profile-registry server, behind the SDK's ``LLMProfileStore`` API.

    Args:
        target: ``host:port`` or ``http://host:port`` (plaintext), or ``https://host:port`` (TLS).
        token: bearer token, sent as ``authorization: Bearer <token>`` on every call.
        ca_file: PEM file of the CA that signed the server's certificate (TLS only; default: the
            system's roots).
        client_cert, client_key: PEM files for mutual TLS.
        tls_server_name: the name to check the certificate against when it is not the host
            connected to (e.g. through a port-forward).
        timeout: seconds each call may take.
        reveal_secrets: ``None`` (default) asks for keys and falls back to masked ones when the
            token lacks the ``secrets`` role (remembered for this store's lifetime); ``True`` always
            asks for keys (PermissionError without the role); ``False`` never asks.
        provider_store: the SDK ``ProviderConnectionStore`` whose connections ``load`` applies to
            profiles that reference one, as ``LLMProfileStore.load`` does. By default the SDK's
            own (``$OH_PERSISTENCE_DIR/provider-connections``, else ``~/.openhands/...``), made
            the first time a loaded profile references a connection, as a bare
            ``LLMProfileStore()`` does; ``None`` leaves ``provider_connection_id`` unresolved.
    """

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        ca_file: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        tls_server_name: str | None = None,
        timeout: float = 30.0,
        reveal_secrets: bool | None = None,
        provider_store: ProviderConnectionStore | None | object = _SDK_DEFAULT,
    ) -> None:
        address, tls = _parse_target(target)
        if not tls and (ca_file or client_cert or client_key or tls_server_name):
            raise ValueError(
                f"TLS options need an https:// target; {target!r} is plaintext (use https://{address})"
            )
        if bool(client_cert) != bool(client_key):
            raise ValueError("client_cert and client_key go together (mutual TLS needs both)")
        if token is not None and not tls and not _is_loopback(address):
            # The CLI warns the same way: a bearer token over plaintext can be read on the wire.
            warnings.warn(
                f"the registry token is sent unencrypted to {address}; use an https:// target",
                stacklevel=2,
            )
        if token is not None:
            # A token read from a mounted file often ends in a newline; inside, no whitespace fits.
            token = token.strip()
            if not token or any(c.isspace() or not c.isprintable() for c in token):
                raise ValueError("token is empty or holds whitespace or control characters")
        self.target = target
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._reveal = reveal_secrets
        # Once the server has refused this token a plaintext export, later loads ask masked at once.
        self._may_reveal = reveal_secrets is not False
        self._provider_store = provider_store
        if tls:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(ca_file),
                private_key=_read(client_key),
                certificate_chain=_read(client_cert),
            )
            options = [("grpc.ssl_target_name_override", tls_server_name)] if tls_server_name else []
            self._channel = grpc.secure_channel(address, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(address)
        self._stub = pb_grpc.ProfileServiceStub(self._channel)

    def __repr__(self) -> str:
        # Never the token.
        return f"RegistryProfileStore({self.target!r})"

    def close(self) -> None:
        """Closes the connection; the store cannot be used afterwards."""
        self._channel.close()

    def __enter__(self) -> RegistryProfileStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # The SDK's LLMProfileStore API ------------------------------------------------------------

    def list(self) -> list[str]:
        """All profiles, as the SDK's ``list`` gives them: file names (``["default.json", ...]``).

        In name order (the SDK's order is the folder's, i.e. unspecified).
        """
        return [f"{name}.json" for name in self._names()]

    def load(
        self,
        name: str,
        *,
        cipher: Cipher | None = None,
        resolve_provider: bool = True,
    ) -> LLM:
        """Loads the LLM of profile ``name``, built as ``LLMProfileStore.load`` builds it from its file.

        The profile is fetched as the file the SDK would write (ExportProfiles), with the keys in
        plaintext when the token may read them, else masked (the SDK then loads no key, as it does
        for a file saved without secrets). ``cipher`` decrypts as in the SDK (keys arrive in
        plaintext, which it leaves as they are).

        Raises:
            FileNotFoundError: the profile does not exist.
            ValueError: the name breaks the SDK's rule, or the profile does not make a valid LLM.
            PermissionError: the token may not read profiles.
            ProviderConnectionNotFound: with a ``provider_store``, as the SDK raises it.
        """
        key = self._key(name)
        text = self._export(key, name)
        from openhands.sdk.llm.llm import LLM

        context: dict[str, Any] | None = {"cipher": cipher} if cipher else None
        try:
            # What LLM.load_from_json does with the file's text, which LLMProfileStore.load calls.
            llm = LLM.from_persisted(json.loads(text), context=context)
        except Exception as e:
            # As the SDK, a ValueError; unlike it, without the cause, whose text may quote a value.
            raise ValueError(f"Failed to load profile `{name}`: {_describe(e)}") from None
        if resolve_provider and llm.provider_connection_id and self._provider_store is not None:
            llm = self._resolve_provider_connection(name, llm, cipher)
        return llm

    def save(
        self,
        name: str,
        llm: LLM,
        include_secrets: bool = False,
        *,
        cipher: Cipher | None = None,
        max_profiles: int | None = None,
    ) -> None:
        """Saves ``llm`` as profile ``name``, overwriting it, as the SDK's ``save`` writes its file.

        The same JSON the SDK would write is imported (ImportProfiles, OVERWRITE). Without
        ``include_secrets`` a key is sent as the SDK's mask, which the registry reads as "keep the
        stored key" (the SDK's file would hold no usable key); an LLM without a key clears it (so
        saving back an LLM loaded by a token that may not read keys clears them, as the SDK's own
        load-then-save of a masked file does).
        With ``include_secrets`` the keys are sent in plaintext, also when a ``cipher`` is given:
        the registry encrypts them at rest itself, and the cipher's role in the SDK is the file's.

        Raises:
            ValueError: the name breaks the SDK's rule, or the server refuses the profile.
            ProfileLimitExceeded: ``max_profiles`` would be exceeded by a new profile (checked
                before the write, not atomically with it).
            PermissionError: the token may not write profiles.
        """
        del cipher  # see above: keys travel in plaintext over the (TLS) connection
        key = self._key(name)
        if max_profiles is not None and not self._exists(key, name):
            if len(self._names()) >= max_profiles:
                from openhands.sdk.llm.llm_profile_store import ProfileLimitExceeded

                raise ProfileLimitExceeded(f"Profile limit reached ({max_profiles}).")
        if llm.provider_connection_id:
            # The SDK's rule 5c: a profile linked to a provider connection keeps no inline credentials.
            llm = llm.model_copy(update={"api_key": None, "base_url": None})
        context: dict[str, Any] = {"expose_secrets": True} if include_secrets else {}
        persisted = llm.to_persisted(context=context)
        document = json.dumps(persisted, indent=2)
        request = pb.ImportProfilesRequest(
            documents=[pb.ProfileDocument(name=key, json=document)],
            on_conflict=pb.ImportProfilesRequest.OVERWRITE,
        )
        response = self._call("ImportProfiles", request, f"Failed to save profile `{name}`")
        for result in response.results:
            if result.outcome == pb.ImportResult.INVALID:
                raise ValueError(f"Failed to save profile `{name}`: {result.reason}")

    def delete(self, name: str) -> None:
        """Deletes profile ``name``; does nothing when it does not exist (as the SDK).

        Raises:
            ValueError: the name breaks the SDK's rule.
            RegistryError: code FAILED_PRECONDITION while conversations in the registry use it.
        """
        key = self._key(name)
        request = pb.DeleteProfileRequest(name=key, allow_missing=True)
        self._call("DeleteProfile", request, f"Failed to delete profile `{name}`")

    def rename(self, old_name: str, new_name: str) -> None:
        """Renames a profile atomically (conversations in the registry that use it follow).

        Raises FileNotFoundError if ``old_name`` is missing, FileExistsError if ``new_name`` is
        taken. When the names are the same profile, the call is a no-op but still verifies the
        profile exists. As the SDK.
        """
        old_key, new_key = self._key(old_name), self._key(new_name)
        if old_key == new_key:
            if not self._exists(old_key, old_name):
                raise FileNotFoundError(f"Profile `{old_name}` not found")
            return
        request = pb.RenameProfileRequest(name=old_key, new_name=new_key)
        try:
            self._stub.RenameProfile(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                raise FileNotFoundError(f"Profile `{old_name}` not found") from None
            if e.code() == grpc.StatusCode.ALREADY_EXISTS:
                raise FileExistsError(f"Profile `{new_name}` already exists") from None
            raise _mapped(e, f"Failed to rename profile `{old_name}` to `{new_name}`") from e

    # Helpers ----------------------------------------------------------------------------------

    def _key(self, name: str) -> str:
        """The registry name ``name`` addresses, as the SDK's ``_get_profile_path`` checks it."""
        key = name.removesuffix(".json")
        if not PROFILE_NAME_REGEX.fullmatch(key):
            raise ValueError(
                f"Invalid profile name: {name!r}. "
                "Profile names must be 1-64 characters, start with a letter "
                "or digit, and contain only letters, digits, '.', '_', or '-'."
            )
        return key

    def _call(self, method: str, request: Any, what: str) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise _mapped(e, what) from e

    def _names(self) -> list[str]:
        names: list[str] = []
        token = ""
        while True:
            request = pb.ListProfilesRequest(page_size=_PAGE_SIZE, page_token=token)
            page = self._call("ListProfiles", request, "Failed to list profiles")
            names.extend(p.name for p in page.profiles)
            token = page.next_page_token
            if not token:
                return names

    def _exists(self, key: str, name: str) -> bool:
        try:
            request = pb.GetProfileRequest(name=key)
            self._stub.GetProfile(request, timeout=self.timeout, metadata=self._metadata)
            return True
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return False
            raise _mapped(e, f"Failed to read profile `{name}`") from e

    def _export(self, key: str, name: str) -> str:
        """The profile's file text: keys in plaintext when this token may read them, else masked."""
        modes = pb.ExportProfilesRequest
        secrets = modes.PLAINTEXT if self._may_reveal else modes.REDACTED
        request = pb.ExportProfilesRequest(names=[key], secrets=secrets)
        try:
            response = self._stub.ExportProfiles(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            asked_keys = secrets == modes.PLAINTEXT
            if e.code() == grpc.StatusCode.PERMISSION_DENIED and asked_keys and self._reveal is None:
                # No `secrets` role: load masked, as the SDK loads a file saved without secrets.
                self._may_reveal = False
                return self._export(key, name)
            if e.code() == grpc.StatusCode.NOT_FOUND:
                raise self._not_found(name) from None
            raise _mapped(e, f"Failed to load profile `{name}`") from e
        for document in response.documents:
            if document.name == key:
                return document.json
        raise self._not_found(name)

    def _not_found(self, name: str) -> FileNotFoundError:
        """The SDK's message for a missing profile, naming the ones there are."""
        try:
            existing = self.list()
        except Exception:
            # The list is a courtesy: a token that may not list still gets the right error.
            return FileNotFoundError(f"Profile `{name}` not found.")
        shown = ", ".join(existing[:_LISTED_IN_ERRORS])
        if len(existing) > _LISTED_IN_ERRORS:
            shown += f", ... ({len(existing)} in all)"
        return FileNotFoundError(f"Profile `{name}` not found. Available profiles: {shown or 'none'}")

    def _resolve_provider_connection(self, name: str, llm: LLM, cipher: Cipher | None) -> LLM:
        """The SDK's own provider-connection rules, run with this store's ``provider_store``."""
        from openhands.sdk.llm.llm_profile_store import LLMProfileStore

        # A bare LLMProfileStore (no folder created) that only carries the provider store, so the
        # rules (connection wins; a missing one raises unless the profile has a key) stay the SDK's.
        if self._provider_store is _SDK_DEFAULT:
            from openhands.sdk.llm.provider_connection_store import ProviderConnectionStore
            from openhands.sdk.utils.path import get_user_persistence_dir

            self._provider_store = ProviderConnectionStore(
                get_user_persistence_dir() / "provider-connections"
            )
        sdk_store = LLMProfileStore.__new__(LLMProfileStore)
        sdk_store._provider_store = self._provider_store
        return sdk_store._resolve_provider_connection(name, llm, cipher=cipher)


def _parse_target(target: str) -> tuple[str, bool]:
    """(host:port, TLS?) for ``host:port``, ``http://host:port`` or ``https://host:port``."""
    for scheme, tls, port in (("https://", True, 443), ("http://", False, 80)):
        if target.startswith(scheme):
            address = target[len(scheme) :].rstrip("/")
            if "/" in address or not address:
                raise ValueError(f"registry target {target!r}: expected {scheme}host:port")
            if not re.search(r":\d+$", address):
                address = f"{address}:{port}"
            return address, tls
    if "://" in target:
        raise ValueError(f"registry target {target!r}: the scheme must be http:// or https://")
    if not re.search(r".:\d+$", target):
        raise ValueError(f"registry target {target!r}: expected host:port, http://host:port or https://host:port")
    return target, False


def _is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


def _describe(e: Exception) -> str:
    """An exception's message without the input values pydantic would quote (they may be keys)."""
    from pydantic import ValidationError

    if isinstance(e, ValidationError):
        errors = e.errors(include_input=False, include_url=False)
        return "; ".join(f"{'.'.join(map(str, err['loc'])) or 'profile'}: {err['msg']}" for err in errors)
    return str(e)


def _mapped(e: grpc.RpcError, what: str) -> Exception:
    """The Python exception a caller of the SDK's store would expect for a gRPC status."""
    code = e.code()
    message = f"{what}: {e.details()}"
    if code == grpc.StatusCode.NOT_FOUND:
        return FileNotFoundError(message)
    if code == grpc.StatusCode.ALREADY_EXISTS:
        return FileExistsError(message)
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
        return ValueError(message)
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        return PermissionError(message)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return TimeoutError(message)
    if code == grpc.StatusCode.UNAVAILABLE:
        return RegistryUnavailable(message)
    return RegistryError(message, code.name if code else "UNKNOWN")
