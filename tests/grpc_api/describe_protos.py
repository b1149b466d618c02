"""Print, as JSON, every message field (number, type, label) of the given generated protobuf modules.

Run as a script in its own process, so that each description holds only the modules it names (importing
tensorflow-serving-api also imports TensorFlow, which the test process does not need).
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any


def _messages(descriptor: Any, into: dict[str, dict[str, list]]) -> None:
    into[descriptor.full_name] = {
        field.name: [field.number, field.type, field.is_repeated,
                     (field.message_type or field.enum_type).full_name if (field.message_type or field.enum_type)
                     else ""]
        for field in descriptor.fields
    }
    for nested in descriptor.nested_types:
        _messages(nested, into)


def describe(module_names: list[str]) -> dict[str, Any]:
    messages: dict[str, dict[str, list]] = {}
    methods: dict[str, list] = {}
    for name in module_names:
        module = importlib.import_module(name)
        for message in module.DESCRIPTOR.message_types_by_name.values():
            _messages(message, messages)
        for service in module.DESCRIPTOR.services_by_name.values():
            methods.update({f"{service.full_name}/{m.name}": [m.input_type.full_name, m.output_type.full_name]
                            for m in service.methods})
    return {"messages": messages, "methods": methods}


if __name__ == "__main__":
    print(json.dumps(describe(sys.argv[1:])))
