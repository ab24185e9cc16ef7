"""Prints, as JSON, every message, enum and gRPC method of tritonclient's generated protocol modules
(`tritonclient.grpc.service_pb2` and `model_config_pb2`, i.e. Triton's own grpc_service.proto and
model_config.proto), so runtime/tests/proto_wire.rs can check our proto/inference.proto against them
field by field: name, number, type, cardinality, oneof."""
import json

from google.protobuf.descriptor import FieldDescriptor
from tritonclient.grpc import model_config_pb2, service_pb2

TYPES = {v: k[len("TYPE_"):].lower() for k, v in vars(FieldDescriptor).items() if k.startswith("TYPE_")}
messages, enums, methods = {}, {}, {}


def walk(m):
    fields = {}
    for f in m.fields:
        type_name = ""
        if f.message_type is not None:
            type_name = f.message_type.full_name
        elif f.enum_type is not None:
            type_name = f.enum_type.full_name
        fields[f.name] = {
            "number": f.number,
            "type": TYPES[f.type],
            "type_name": type_name,
            "repeated": f.is_repeated,
            "oneof": f.containing_oneof.name if f.containing_oneof is not None else "",
        }
    messages[m.full_name] = {"fields": fields, "map_entry": m.GetOptions().map_entry}
    for n in m.nested_types:
        walk(n)
    for e in m.enum_types:
        enums[e.full_name] = {v.name: v.number for v in e.values}


for module in (service_pb2, model_config_pb2):
    fd = module.DESCRIPTOR
    for m in fd.message_types_by_name.values():
        walk(m)
    for e in fd.enum_types_by_name.values():
        enums[e.full_name] = {v.name: v.number for v in e.values}
    for s in fd.services_by_name.values():
        for meth in s.methods:
            methods[f"{s.full_name}.{meth.name}"] = [meth.input_type.full_name, meth.output_type.full_name]

print(json.dumps({"messages": messages, "enums": enums, "methods": methods}))
