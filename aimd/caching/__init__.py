"""The AIM caching rules (SPEC B1-B9, D1-D8), as pure decisions over the shared index plus thin
writes. Where each rule lives, in the seed's words:

- templates validated and mirrored: :mod:`.templates` (pure), :mod:`.template` (reconciler)
- one model cache per ``(namespace, sourceUri)``, its PVC, probe and download Jobs, retries, a lost
  volume (B2-B4, B8): :mod:`.model_cache` (``decide`` is pure; ``model_caches_for(uri)`` in
  :mod:`.state` finds supply, ``template_caches_needing(uri)`` demand)
- a template cache is the worst of its model caches (B7), D2 in
  ``TemplateCacheReconciler.keep_available_model_caches``: :mod:`.template_cache`
- a service ensures its template cache (B1, D6), mounts it (B5), D1 in
  ``ServiceReconciler.keep_available_template_caches``: :mod:`.service`
- who is woken by what (B7): :mod:`.controller`; names (E1): :mod:`.names`; minimal writes (E4):
  :mod:`.writes`; manifests: :mod:`.builders`; metrics: :mod:`.metrics`
"""
