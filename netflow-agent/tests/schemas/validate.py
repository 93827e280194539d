"""Validates cluster-wide policy files against the CRDs' OpenAPI schemas.

Usage: python3 validate.py FILE...

Each document's apiVersion and kind pick the schema in this directory (the
openAPIV3Schema of the network-policy-api CRDs, standard channel, with the
bundle version recorded in each file). Strict as `kubectl --validate=strict`:
a field the schema does not name is an error (the API server would drop it
silently). CEL rules (x-kubernetes-validations) are not evaluated.
"""

import json
import pathlib
import sys

import jsonschema
import yaml

HERE = pathlib.Path(__file__).parent


def strict(schema):
    """Forbid fields a schema does not name, as structural schemas prune them."""
    if isinstance(schema, dict):
        if (
            schema.get("type") == "object"
            and "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema = dict(schema, additionalProperties=False)
        return {key: strict(value) for key, value in schema.items()}
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def schemas():
    found = {}
    for path in HERE.glob("*.json"):
        crd = json.loads(path.read_text())
        key = (f"{crd['group']}/{crd['version']}", crd["kind"])
        schema = strict(crd["openAPIV3Schema"])
        # ObjectMeta is validated by the API server, not the CRD.
        schema["properties"]["metadata"] = {"type": "object"}
        found[key] = schema
    return found


def main(files):
    known = schemas()
    failures = []
    for name in files:
        for index, document in enumerate(yaml.safe_load_all(pathlib.Path(name).read_text())):
            if document is None:
                continue
            key = (document.get("apiVersion"), document.get("kind"))
            schema = known.get(key)
            if schema is None:
                failures.append(f"{name}: document {index}: no schema for {key}")
                continue
            validator = jsonschema.Draft7Validator(schema)
            for error in validator.iter_errors(document):
                where = "/".join(str(part) for part in error.absolute_path)
                failures.append(f"{name}: document {index} ({key[1]}) at {where}: {error.message}")
    for failure in failures:
        print(failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
