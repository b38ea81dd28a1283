"""Pods' GPUs from the kubelet PodResources v1 `List` RPC over its unix socket.

The message types are built at run time from a FileDescriptorProto written below (the
subset of k8s.io/kubelet/pkg/apis/podresources/v1/api.proto this client reads; fields it
leaves out are skipped by the protobuf parser), so no generated code lives in the tree.
grpcio and protobuf are imported only when a socket is configured.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ceems.exporter.gpu.devices import GpuDevice
from ceems.exporter.gpu.mapping import GpuShare, merge_shares

log = logging.getLogger(__name__)

SERVICE = "v1.PodResourcesLister"
LIST_METHOD = f"/{SERVICE}/List"
# The kubelet may answer for hundreds of pods; gRPC's 4 MiB default is too small for some
# nodes (CEEMS raises it to 128 MiB as well).
MAX_RECEIVE_BYTES = 128 * 1024 * 1024

# message -> [(field, number, type, repeated, message type)]
_MESSAGES: dict[str, list[tuple[str, int, str, bool, str]]] = {
    "ListPodResourcesRequest": [],
    "ListPodResourcesResponse": [("pod_resources", 1, "message", True, "PodResources")],
    "PodResources": [
        ("name", 1, "string", False, ""),
        ("namespace", 2, "string", False, ""),
        ("containers", 3, "message", True, "ContainerResources"),
    ],
    "ContainerResources": [
        ("name", 1, "string", False, ""),
        ("devices", 2, "message", True, "ContainerDevices"),
    ],
    "ContainerDevices": [
        ("resource_name", 1, "string", False, ""),
        ("device_ids", 2, "string", True, ""),
    ],
}


class PodResourcesError(Exception):
    """The kubelet PodResources API could not be reached or answered with an error."""


@dataclass(frozen=True, slots=True)
class PodDevices:
    """The device ids a pod's containers were allocated, per resource name."""

    namespace: str
    name: str
    devices: tuple[tuple[str, str], ...]  # (resource name, device id)


@dataclass(frozen=True, slots=True)
class PodResourcesMessages:
    """The List request and response classes, with the descriptor pool they come from."""

    pool: Any  # kept referenced for as long as its classes are in use
    request: Any
    response: Any


@functools.cache
def podresources_messages() -> PodResourcesMessages:
    """The message classes, built once from a descriptor written here."""
    descriptor_pb2 = importlib.import_module("google.protobuf.descriptor_pb2")
    descriptor_pool = importlib.import_module("google.protobuf.descriptor_pool")
    message_factory = importlib.import_module("google.protobuf.message_factory")
    field = descriptor_pb2.FieldDescriptorProto
    types = {"string": field.TYPE_STRING, "message": field.TYPE_MESSAGE}
    proto = descriptor_pb2.FileDescriptorProto(
        name="ceems/kubelet/podresources/v1/api.proto", package="v1", syntax="proto3"
    )
    for message, fields in _MESSAGES.items():
        described = proto.message_type.add(name=message)
        for name, number, kind, repeated, type_name in fields:
            added = described.field.add(
                name=name,
                number=number,
                type=types[kind],
                label=field.LABEL_REPEATED if repeated else field.LABEL_OPTIONAL,
            )
            if type_name:  # set only for message fields: an empty one is still "set"
                added.type_name = f".v1.{type_name}"
    pool = descriptor_pool.DescriptorPool()  # private: other libraries may define "v1" too
    pool.AddSerializedFile(proto.SerializeToString())
    request = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("v1.ListPodResourcesRequest")
    )
    response = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("v1.ListPodResourcesResponse")
    )
    return PodResourcesMessages(pool, request, response)


def list_pod_devices(socket_path: str, timeout_s: float) -> list[PodDevices]:
    """Every pod the kubelet knows with its allocated devices."""
    grpc = importlib.import_module("grpc")
    messages = podresources_messages()
    request_class, response_class = messages.request, messages.response
    target = "unix:" + str(Path(socket_path).absolute())
    options = [("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)]
    try:
        with grpc.insecure_channel(target, options=options) as channel:
            call = channel.unary_unary(
                LIST_METHOD,
                request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString,
            )
            response = call(request_class(), timeout=timeout_s)
    except grpc.RpcError as err:
        raise PodResourcesError(
            f"kubelet PodResources List on {socket_path}: {err.code().name}: {err.details()}"
        ) from err
    return [
        PodDevices(
            namespace=pod.namespace,
            name=pod.name,
            devices=tuple(
                (device.resource_name, device_id)
                for container in pod.containers
                for device in container.devices
                for device_id in device.device_ids
            ),
        )
        for pod in response.pod_resources
    ]


def read_pod_uids(pod_logs_dir: Path) -> dict[tuple[str, str], str]:
    """(namespace, pod name) -> pod UID from the kubelet's `<ns>_<name>_<uid>` log folders.

    PodResources names pods but does not give their UIDs, which are what the pod cgroups
    carry; the kubelet keeps one log folder per pod named with all three, and names and
    namespaces (DNS labels) cannot contain `_`.
    """
    uids = {}
    try:
        entries = list(pod_logs_dir.iterdir())
    except OSError as err:
        raise PodResourcesError(f"cannot list pod log folders in {pod_logs_dir}: {err}") from err
    for entry in entries:
        parts = entry.name.split("_")
        if len(parts) == 3 and all(parts):
            uids[(parts[0], parts[1])] = parts[2]
    return uids


def pod_gpu_shares(
    pods: Sequence[PodDevices],
    devices: Sequence[GpuDevice],
    pod_uids: Mapping[tuple[str, str], str],
) -> dict[str, list[GpuShare]]:
    """Pod UID -> shares of the GPUs its containers hold.

    A time-sliced GPU is advertised as replicas `<id>::<n>`; as in CEEMS's k8s collector,
    each pod holding replicas of a device gets its replicas over all replicas held on that
    device now, times the device's share of its physical GPU.
    """
    by_id = {pid: dev for dev in devices for pid in dev.plugin_ids()}
    held: dict[str, Counter[str]] = {}
    for pod in pods:
        uid = pod_uids.get((pod.namespace, pod.name))
        if uid is None:
            if pod.devices:
                log.debug("pod UID unknown", extra={"namespace": pod.namespace, "pod": pod.name})
            continue
        for _, device_id in pod.devices:
            plugin_id = device_id.split("::", 1)[0].lower()
            if plugin_id in by_id:
                held.setdefault(uid, Counter())[plugin_id] += 1
    totals: Counter[str] = Counter()
    for counts in held.values():
        totals.update(counts)
    return {
        uid: merge_shares(
            GpuShare(by_id[pid], by_id[pid].share_of_parent * n / totals[pid])
            for pid, n in counts.items()
        )
        for uid, counts in held.items()
    }


def kubelet_pod_gpus(
    socket_path: str,
    devices: Sequence[GpuDevice],
    timeout_s: float,
    pod_logs_dir: Path = Path("/var/log/pods"),
) -> dict[str, list[GpuShare]]:
    """Pod UID -> GPU shares, asking the kubelet which devices each pod holds."""
    pods = list_pod_devices(socket_path, timeout_s)
    return pod_gpu_shares(pods, devices, read_pod_uids(pod_logs_dir))
