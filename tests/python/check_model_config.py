"""Parses a Triton config.pbtxt with Triton's own schema and prints it as JSON.

Usage: check_model_config.py CONFIG.pbtxt

The schema is `ModelConfig` from tritonclient (model_config.proto, the file Triton's server reads
its configurations with), parsed by protobuf's text-format parser: a field Triton does not know, a
wrong enum name or a badly escaped string fails here as it would in Triton. The output is
`MessageToDict` with the proto field names and every field printed, also those left at their
default (so `kind: KIND_AUTO`, enum value 0, is visible); 64-bit integers are JSON strings, as
protobuf's JSON mapping writes them. Exit status 1 with the parser's message on stderr when the
text does not parse.
"""

import json
import sys

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2


def to_dict(message):
    try:
        return json_format.MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    except TypeError:  # protobuf before 5.26 names the option differently
        return json_format.MessageToDict(message, preserving_proto_field_name=True, including_default_value_fields=True)


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    path = argv[1]
    with open(path, encoding="utf-8") as f:
        text = f.read()
    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        print(f"{path}: not a Triton ModelConfig: {e}", file=sys.stderr)
        return 1
    print(json.dumps(to_dict(config), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
