"""The AIM API as data, at the bottom of the layers: the kinds, labels, annotations and finalizer
(:mod:`.kinds`), resource descriptors (:mod:`.resource`) and the CRD schemas (:mod:`.crds`).
Nothing here does I/O or imports another aimd package.
"""
