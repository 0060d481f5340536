"""The Job side: `aimd probe` (how big is a model) and `aimd download` (fetch it onto a PVC).

Layout, one job per module: ``uri`` parses hf:// and s3:// URIs; ``hf`` and ``s3`` turn a URI
into a :class:`~aimd.download.plan.Plan` (the files, their sizes and published digests, and how to
fetch each byte range); ``transfer`` fetches a plan into a directory (parallel ranged requests,
resume, stall detection) with ``fetch`` (the ranged GETs, in worker threads) and ``targets``
(each file located once, its redirect reused until it expires); ``verify`` checks digests;
``manifest`` records what was verified; ``report`` tells the AIMModelCache, stdout and the
termination log; ``reasons`` names every way an attempt can fail. This package uses only
:mod:`aimd.kube` and the kind descriptors.
"""
