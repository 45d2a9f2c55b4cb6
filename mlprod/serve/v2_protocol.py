"""The Open Inference Protocol v2 (KServe, Triton): tensors in, tensors out.

A request carries one input tensor per request field, named after it, all with the same
number of elements (one per record; shape ``[n]`` or ``[n, 1]``, data flat or nested)::

    {"id": "42", "inputs": [{"name": "origin", "datatype": "BYTES", "shape": [2],
                             "data": ["JFK", "EWR"]}, ...],
     "outputs": [{"name": "score"}]}

and gets ``score`` (FP64) and ``decision`` (BOOL) tensors back. Times are BYTES holding ISO
8601 text; tensors have no null.

The binary tensor data extension is read as tritonclient writes it: the
``Inference-Header-Content-Length`` header gives the length of the JSON part, and the tensors
follow it, in the order of the inputs that declare ``parameters.binary_data_size``: little
endian, BOOL one byte per element, BYTES a 4-byte length then the bytes of each element.
Outputs are answered the same way when the request asks for it (``outputs[].parameters.
binary_data`` or ``parameters.binary_data_output``).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from math import prod
from typing import Any

from mlprod.features.requests import RequestField
from mlprod.serve.bodies import check_count, decode_json, describe, dumps
from mlprod.serve.errors_http import HttpError

HEADER_LENGTH = "Inference-Header-Content-Length"

# struct codes of the fixed-size datatypes; BYTES is length-prefixed.
_FIXED = {
    "BOOL": "?",
    "INT8": "b",
    "INT16": "h",
    "INT32": "i",
    "INT64": "q",
    "UINT8": "B",
    "UINT16": "H",
    "UINT32": "I",
    "UINT64": "Q",
    "FP16": "e",
    "FP32": "f",
    "FP64": "d",
}
DATATYPES = (*_FIXED, "BYTES")
FIELD_DATATYPES = {
    "int": "INT64",
    "float": "FP64",
    "string": "BYTES",
    "bool": "BOOL",
    "timestamp": "BYTES",
    "date": "BYTES",
}
OUTPUTS = {"score": "FP64", "decision": "BOOL"}
_OUTPUT_LIST = ", ".join(f"'{o}'" for o in sorted(OUTPUTS))


def _bad(message: str) -> HttpError:
    return HttpError(400, message)


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    records: list[dict[str, Any]]
    outputs: list[str]  # in the order to answer them
    binary: set[str]  # outputs to answer as binary data


def parse_infer(body: bytes, header_length: str | None, limit: int) -> InferRequest:
    """Records from a v2 inference request, JSON or with binary tensors after the JSON."""
    binary = b""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise _bad(
                f"{HEADER_LENGTH} must be the length of the JSON part of the body "
                f"(0 to {len(body)} bytes), got '{header_length}'"
            )
        body, binary = body[: int(header_length)], body[int(header_length) :]
    request = decode_json(body)
    if not isinstance(request, dict):
        raise _bad(f"expected an inference request (a JSON object), got {describe(request)}")
    unknown = sorted(set(request) - {"id", "parameters", "inputs", "outputs"})
    if unknown:
        raise _bad(f"unknown key '{unknown[0]}' in the inference request")
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise _bad(f"'id' must be a string, got {describe(request_id)}")
    parameters = _parameters(request, "the inference request")
    columns = _read_inputs(request.get("inputs"), binary)
    count = _record_count(columns)
    check_count(count, limit, 400)
    names = list(columns)
    records = [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]
    outputs, binary_outputs = _requested_outputs(
        request.get("outputs"), parameters.get("binary_data_output") is True
    )
    return InferRequest(request_id, records, outputs, binary_outputs)


def _parameters(owner: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = owner.get("parameters", {})
    if not isinstance(parameters, dict):
        raise _bad(f"'parameters' of {where} must be an object, got {describe(parameters)}")
    return parameters


def _read_inputs(inputs: Any, binary: bytes) -> dict[str, list[Any]]:
    if not isinstance(inputs, list) or not inputs:
        raise _bad(
            "'inputs' must be a non-empty list of tensors, one per request field, "
            f"got {describe(inputs)}"
        )
    columns: dict[str, list[Any]] = {}
    offset = 0
    for tensor in inputs:
        if not isinstance(tensor, dict):
            raise _bad(f"each input must be an object, got {describe(tensor)}")
        name, datatype, count = _tensor_header(tensor)
        if name in columns:
            raise _bad(f"input '{name}' is given twice")
        size = _parameters(tensor, f"input '{name}'").get("binary_data_size")
        if size is None:
            columns[name] = _json_data(name, tensor, count)
            continue
        if "data" in tensor:
            raise _bad(f"input '{name}' has both 'data' and binary data; give one")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise _bad(f"input '{name}': binary_data_size must be a byte count")
        if offset + size > len(binary):
            raise _bad(
                f"input '{name}' declares {size} bytes of binary data, "
                f"but only {len(binary) - offset} are left in the body"
            )
        columns[name] = _binary_data(name, datatype, binary[offset : offset + size], count)
        offset += size
    if offset != len(binary):
        raise _bad(f"{len(binary) - offset} bytes of binary data follow the inputs unread")
    return columns


def _tensor_header(tensor: dict[str, Any]) -> tuple[str, str, int]:
    """An input's name, datatype and element count, checked."""
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise _bad(f"each input needs a 'name' (a request field), got {describe(name)}")
    unknown = sorted(set(tensor) - {"name", "datatype", "shape", "parameters", "data"})
    if unknown:
        raise _bad(f"input '{name}' has an unknown key '{unknown[0]}'")
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        raise _bad(
            f"input '{name}' has datatype {describe(datatype)}; expected one of "
            + ", ".join(DATATYPES)
        )
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        or any(d != 1 for d in shape[1:])
    ):
        raise _bad(
            f"input '{name}' has shape {shape if isinstance(shape, list) else describe(shape)}; "
            "expected [n] or [n, 1]: one value per record"
        )
    return name, str(datatype), prod(shape)


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for value in data:
        if isinstance(value, list):
            flat.extend(_flatten(value))
        else:
            flat.append(value)
    return flat


def _json_data(name: str, tensor: dict[str, Any], count: int) -> list[Any]:
    data = tensor.get("data")
    if not isinstance(data, list):
        raise _bad(f"input '{name}' needs 'data', a list of values, got {describe(data)}")
    values = _flatten(data)
    if len(values) != count:
        raise _bad(f"input '{name}' has {len(values)} values for shape {tensor['shape']}")
    return values


def _binary_data(name: str, datatype: str, raw: bytes, count: int) -> list[Any]:
    if datatype == "BYTES":
        return _decode_bytes(name, raw, count)
    code = _FIXED[datatype]
    need = count * struct.calcsize(code)
    if len(raw) != need:
        raise _bad(
            f"input '{name}' has {len(raw)} bytes of binary data; "
            f"{count} {datatype} values take {need}"
        )
    return list(struct.unpack(f"<{count}{code}", raw))


def _decode_bytes(name: str, raw: bytes, count: int) -> list[Any]:
    values: list[Any] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise _bad(f"input '{name}': a BYTES element is cut short in its 4-byte length")
        (length,) = struct.unpack_from("<I", raw, offset)
        start, offset = offset + 4, offset + 4 + length
        if offset > len(raw):
            raise _bad(f"input '{name}': a BYTES element of {length} bytes is cut short")
        try:
            values.append(raw[start:offset].decode())
        except UnicodeDecodeError:
            raise _bad(f"input '{name}': element {len(values)} is not UTF-8 text") from None
    if len(values) != count:
        raise _bad(f"input '{name}' has {len(values)} BYTES elements; its shape says {count}")
    return values


def _record_count(columns: dict[str, list[Any]]) -> int:
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"'{n}' has {k}" for n, k in sorted(lengths.items()))
        raise _bad(f"all inputs must have one value per record, but {shown}")
    return next(iter(lengths.values()))


def _requested_outputs(requested: Any, all_binary: bool) -> tuple[list[str], set[str]]:
    if requested is None:
        return list(OUTPUTS), set(OUTPUTS) if all_binary else set()
    if not isinstance(requested, list):
        raise _bad(f"'outputs' must be a list, got {describe(requested)}")
    names: list[str] = []
    binary: set[str] = set()
    for output in requested:
        name = output.get("name") if isinstance(output, dict) else None
        if name not in OUTPUTS:
            raise _bad(f"unknown output {describe(name)}; this model answers {_OUTPUT_LIST}")
        assert isinstance(output, dict) and isinstance(name, str)
        names.append(name)
        wants = _parameters(output, f"output '{name}'").get("binary_data")
        if wants is True or (wants is None and all_binary):
            binary.add(name)
    return names, binary


def infer_answer(
    model_name: str,
    model_version: str,
    request: InferRequest,
    scores: Sequence[float],
    decisions: Sequence[bool],
) -> tuple[bytes, dict[str, str]]:
    """The response body and its extra headers: JSON, or JSON then binary tensors."""
    tensors: dict[str, tuple[list[Any], bytes]] = {
        "score": (list(scores), struct.pack(f"<{len(scores)}d", *scores)),
        "decision": (list(decisions), bytes(bytearray(bool(d) for d in decisions))),
    }
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name in request.outputs:
        data, raw = tensors[name]
        output: dict[str, Any] = {"name": name, "datatype": OUTPUTS[name], "shape": [len(data)]}
        if name in request.binary:
            output["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            output["data"] = data
        outputs.append(output)
    answer: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request.id is not None:
        answer["id"] = request.id
    answer["outputs"] = outputs
    header = dumps(answer)
    if not blobs:
        return header, {}
    return header + b"".join(blobs), {HEADER_LENGTH: str(len(header))}


def model_metadata(
    model_name: str, model_version: str, fields: Sequence[RequestField]
) -> dict[str, Any]:
    return {
        "name": model_name,
        "versions": [model_version],
        "platform": "mlprod",
        "inputs": [
            {"name": f.name, "datatype": FIELD_DATATYPES[f.type], "shape": [-1]} for f in fields
        ],
        "outputs": [{"name": n, "datatype": t, "shape": [-1]} for n, t in OUTPUTS.items()],
    }
