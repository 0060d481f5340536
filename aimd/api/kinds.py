"""The five AIM kinds, their API group, and the label keys aimd puts on what it creates.

One source of truth: every module that names an AIM resource or label imports it from here.
"""

from __future__ import annotations

from aimd.api.resource import Resource

GROUP = "aim.eai.amd.com"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

SERVICE_TEMPLATES = Resource(GROUP, VERSION, "aimservicetemplates", "AIMServiceTemplate", True)
CLUSTER_SERVICE_TEMPLATES = Resource(
    GROUP, VERSION, "aimclusterservicetemplates", "AIMClusterServiceTemplate", False
)
SERVICES = Resource(GROUP, VERSION, "aimservices", "AIMService", True)
TEMPLATE_CACHES = Resource(GROUP, VERSION, "aimtemplatecaches", "AIMTemplateCache", True)
MODEL_CACHES = Resource(GROUP, VERSION, "aimmodelcaches", "AIMModelCache", True)

ALL_KINDS = (
    SERVICE_TEMPLATES,
    CLUSTER_SERVICE_TEMPLATES,
    SERVICES,
    TEMPLATE_CACHES,
    MODEL_CACHES,
)

LABEL_CREATED_BY_SERVICE = f"{GROUP}/created-by-service"
LABEL_CREATED_BY_TEMPLATE_CACHE = f"{GROUP}/created-by-template-cache"
LABEL_MODEL_CACHE = f"{GROUP}/model-cache"
FINALIZER = f"{GROUP}/cleanup"
LABEL_SERVICE = f"{GROUP}/service"
FIELD_MANAGER = "aimd"
# Set (to any new value, e.g. a timestamp) on a Failed AIMModelCache to retry it now rather than
# at nextRetryTime: after fixing a Secret its env refers to, which aimd may not watch.
ANNOTATION_RETRY = f"{GROUP}/retry"
