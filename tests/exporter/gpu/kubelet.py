"""A real gRPC PodResourcesLister on a unix socket, speaking the kubelet's full v1 messages.

The server's descriptor carries fields the client does not declare (cpu_ids, memory,
topology), so the tests also show the client skips what it does not read.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto
STRING, INT64, UINT64, MESSAGE = F.TYPE_STRING, F.TYPE_INT64, F.TYPE_UINT64, F.TYPE_MESSAGE
ONE, MANY = F.LABEL_OPTIONAL, F.LABEL_REPEATED

# k8s.io/kubelet/pkg/apis/podresources/v1/api.proto, minus the RPCs the exporter never calls
SCHEMA: dict[str, list[tuple[str, int, int, int, str]]] = {
    "ListPodResourcesRequest": [],
    "ListPodResourcesResponse": [("pod_resources", 1, MESSAGE, MANY, "PodResources")],
    "PodResources": [
        ("name", 1, STRING, ONE, ""),
        ("namespace", 2, STRING, ONE, ""),
        ("containers", 3, MESSAGE, MANY, "ContainerResources"),
    ],
    "ContainerResources": [
        ("name", 1, STRING, ONE, ""),
        ("devices", 2, MESSAGE, MANY, "ContainerDevices"),
        ("cpu_ids", 3, INT64, MANY, ""),
        ("memory", 4, MESSAGE, MANY, "ContainerMemory"),
    ],
    "ContainerMemory": [
        ("memory_type", 1, STRING, ONE, ""),
        ("size", 2, UINT64, ONE, ""),
        ("topology", 3, MESSAGE, ONE, "TopologyInfo"),
    ],
    "ContainerDevices": [
        ("resource_name", 1, STRING, ONE, ""),
        ("device_ids", 2, STRING, MANY, ""),
        ("topology", 3, MESSAGE, ONE, "TopologyInfo"),
    ],
    "TopologyInfo": [("nodes", 1, MESSAGE, MANY, "NUMANode")],
    "NUMANode": [("ID", 1, INT64, ONE, "")],
}


def _classes() -> tuple[Any, dict[str, Any]]:
    proto = descriptor_pb2.FileDescriptorProto(
        name="kubelet/api.proto", package="v1", syntax="proto3"
    )
    for name, fields in SCHEMA.items():
        message = proto.message_type.add(name=name)
        for field, number, kind, label, type_name in fields:
            added = message.field.add(name=field, number=number, type=kind, label=label)
            if type_name:
                added.type_name = f".v1.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(proto.SerializeToString())
    return pool, {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"v1.{name}"))
        for name in SCHEMA
    }


POOL, MESSAGES = _classes()


def response(pods: list[tuple[str, str, list[tuple[str, list[str]]]]]) -> Any:
    """A List answer: (namespace, pod, [(resource, device ids)]) with CPU and NUMA noise."""
    answer = MESSAGES["ListPodResourcesResponse"]()
    for namespace, name, devices in pods:
        pod = answer.pod_resources.add(name=name, namespace=namespace)
        container = pod.containers.add(name="main", cpu_ids=[2, 3])
        container.memory.add(memory_type="memory", size=1 << 30).topology.nodes.add(ID=0)
        for resource, ids in devices:
            device = container.devices.add(resource_name=resource, device_ids=ids)
            device.topology.nodes.add(ID=1)
        pod.containers.add(name="sidecar")
    return answer


@contextmanager
def kubelet(
    socket: Path, answer: Any, delay_s: float = 0.0, status: Any = None
) -> Iterator[list[int]]:
    """Serve `answer` to List on `socket`; yields a list that counts the calls."""
    calls: list[int] = []

    def list_pods(request: Any, context: grpc.ServicerContext) -> Any:
        calls.append(1)
        if delay_s:
            time.sleep(delay_s)
        if status is not None:
            context.abort(status, "pod resources API disabled")
        return answer

    handler = grpc.method_handlers_generic_handler(
        "v1.PodResourcesLister",
        {
            "List": grpc.unary_unary_rpc_method_handler(
                list_pods,
                request_deserializer=MESSAGES["ListPodResourcesRequest"].FromString,
                response_serializer=lambda message: message.SerializeToString(),
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"unix:{socket}")
    server.start()
    try:
        yield calls
    finally:
        server.stop(grace=None)


def pod_logs(directory: Path, *pods: tuple[str, str, str]) -> Path:
    """The kubelet's /var/log/pods with a folder per (namespace, name, uid)."""
    directory.mkdir(parents=True, exist_ok=True)
    for namespace, name, uid in pods:
        (directory / f"{namespace}_{name}_{uid}").mkdir()
    return directory
