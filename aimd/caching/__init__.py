"""The AIM caching rules (SPEC B1-B10, D1-D8, E1-E7, S1), as pure decisions over the shared index
plus thin writes. Where each rule lives, in the seed's words:

- the seed's deletion and reuse rules, pure and named in its words: :mod:`.rules`
  (``plan_release``: "Available caches → Preserved; non-available caches → Deleted", shared by
  both finalizers; ``prefer_available_then_oldest``: the one cache every consumer uses;
  ``worst``; ``may_delete``: Available caches are only deleted by a person)
- templates validated and mirrored: :mod:`.templates` (pure), :mod:`.template` (reconciler)
- one model cache per ``(namespace, sourceUri)``, its PVC, probe and download Jobs, retries, a
  lost or too small volume, a pod that cannot start (B2-B4, B8, E6, E7): ``decide`` in
  :mod:`.model_cache_plan` (pure), the reconciler in :mod:`.model_cache` (``model_caches_for(uri)``
  in :mod:`.state` finds supply,
  ``template_caches_needing(uri)`` demand); why a pod cannot start: :mod:`.pods`; the download
  governor: :mod:`.governor`
- a template cache is the worst of its model caches (B7), D2 in
  ``TemplateCacheReconciler.keep_available_model_caches``: :mod:`.template_cache`
- a service ensures its template cache (B1, D6), mounts it (B5), D1 in
  ``ServiceReconciler.keep_available_template_caches``: :mod:`.service`
- what the admin allows a model cache to ask for (S1): :mod:`.policy`; Secrets by consent:
  :mod:`.credentials`
- who is woken by what (B7): :mod:`.wiring`; what every reconciler shares (a finalized pass, the
  release of one cache): :mod:`.reconciler`; the index's questions: :mod:`.state`; names (E1):
  :mod:`.names`; minimal, conditional writes (E4, D5): :mod:`.writes`; manifests:
  :mod:`.builders`; metrics: :mod:`.metrics`; ``aimd run``: :mod:`.controller`
"""
