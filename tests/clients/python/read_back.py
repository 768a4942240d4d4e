"""Reads back everything a profile-registry holds with the Python protobuf runtime: every profile
(ListProfiles), every conversation (ListConversations) and each one's events (ListEvents), every
provider connection, meta-profile and agent profile (their List rpcs), through pagination. Whatever the server accepted must decode here (Python's runtime refuses messages nested
past its recursion limit of 100).

Usage: read_back.py --server HOST:PORT --proto-dir PROTO_DIR
Prints `read N profiles, M conversations, K events, D documents`; exits non-zero on the first call that fails.
"""
import argparse
import importlib
import os
import sys

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from profile_client import load_stubs  # noqa: E402


def pages(call, request, items):
    while True:
        page = call(request, timeout=30)
        yield from getattr(page, items)
        if not page.next_page_token:
            return
        request.page_token = page.next_page_token


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--proto-dir", required=True)
    a = ap.parse_args()
    pb, rpc = load_stubs(a.proto_dir)
    cpb = importlib.import_module("profileregistry.v1.conversation_pb2")
    crpc = importlib.import_module("profileregistry.v1.conversation_pb2_grpc")
    dpb = importlib.import_module("profileregistry.v1.documents_pb2")
    drpc = importlib.import_module("profileregistry.v1.documents_pb2_grpc")
    with grpc.insecure_channel(a.server) as ch:
        profiles = rpc.ProfileServiceStub(ch)
        conversations = crpc.ConversationServiceStub(ch)
        n_profiles = sum(1 for _ in pages(profiles.ListProfiles, pb.ListProfilesRequest(page_size=100), "profiles"))
        n_conversations = n_events = 0
        for c in pages(conversations.ListConversations, cpb.ListConversationsRequest(page_size=100), "conversations"):
            n_conversations += 1
            request = cpb.ListEventsRequest(conversation_id=c.id, page_size=100)
            n_events += sum(1 for _ in pages(conversations.ListEvents, request, "events"))
        n_documents = 0
        for stub, method, request, items in [
            (drpc.ProviderConnectionServiceStub(ch), "ListProviderConnections", dpb.ListProviderConnectionsRequest, "connections"),
            (drpc.MetaProfileServiceStub(ch), "ListMetaProfiles", dpb.ListMetaProfilesRequest, "meta_profiles"),
            (drpc.AgentProfileServiceStub(ch), "ListAgentProfiles", dpb.ListAgentProfilesRequest, "agent_profiles"),
        ]:
            n_documents += sum(1 for _ in pages(getattr(stub, method), request(page_size=100), items))
    print(f"read {n_profiles} profiles, {n_conversations} conversations, {n_events} events, {n_documents} documents")


if __name__ == "__main__":
    main()
