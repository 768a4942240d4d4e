"""profile_registry_client: the OpenHands SDK's LLM profile store, kept in a profile-registry server.

``RegistryProfileStore`` has the signatures and meaning of the SDK's
``openhands.sdk.llm.llm_profile_store.LLMProfileStore`` (load, save, list, delete, rename), so it
satisfies the SDK's ``LLMProfileLoader`` and ``LLMProfileMutator`` protocols and can be handed to
``resolve_agent_profile`` and the ``profile_refs`` helpers in place of the folder-backed store.
"""

from .store import RegistryError, RegistryProfileStore, RegistryUnavailable

__all__ = ["RegistryError", "RegistryProfileStore", "RegistryUnavailable"]
