"""The only code that speaks to the API server.

- :mod:`.client` — ``KubeClient``: one aiohttp session, orjson bodies, retries, verbs on
  :class:`~aimd.kube.resources.Resource` descriptors.
- :mod:`.auth` — kubeconfig (via kubernetes_asyncio's loaders) and in-cluster credentials.
- :mod:`.errors` — ``NotFound``, ``Conflict``, ``AlreadyExists``, ``Gone``, ... from Status objects.
- :mod:`.watch` — list-then-watch with bookmarks, 410 relists and backoff (client-go's reflector).
- :mod:`.lease` — Lease leader election.
- :mod:`.backoff`, :mod:`.metrics` (``rest_client_requests_total``,
  ``leader_election_master_status``), :mod:`.resources`.
"""
