"""A minimal Graph API stand-in written from Meta's Catalog Integration page (shared/reference/002), not from
the sandbox: it serves that page's JSON samples as printed, so the real client and collection code can be run
on Meta's own shapes.

The samples live in ``seed_samples/*.txt`` byte for byte as the page prints them (each file is the text under
one "Sample Response" heading). They are not valid JSON as printed; ``seed_json`` makes them parse with the
smallest edits, and ``seed_edits`` lists exactly what it changed so a test can prove nothing else moved:

- a line holding only ``...`` (the page's "more entries here") is dropped;
- a comma before a closing ``}`` or ``]`` (a trailing comma), and the stray comma in ``"data": [{,`` of the
  products sample, are dropped;
- curly quotes used as string delimiters (``"cta": “ONSITE_CHECKOUT”`` and ``"id": “1181538518900034”`` in the
  commerce settings sample) become straight quotes. Curly quotes *inside* a string (the ``href=”…”`` of the
  image error's description) are content and stay.

What the page has no sample for is answered minimally and marked ``not in the seed`` below: the upload
session node (only ``end_time`` is needed to know the upload finished), the catalog's
``external_event_sources`` edge (empty), priorities other than the one a sample was requested with (empty
``data``), and the ``/{product-item-id}?fields=retailer_id`` lookup (answered from ``retailer_ids``; an id
not in it gets Meta's "object does not exist" error, code 100 as in the Product Catalog reference's error list).
Each sample is served as printed whatever ``fields`` the client names (Meta would honour ``fields``): fields a
sample has and the client did not ask for, like the upload error's ``column_number``, therefore reach the
collection code, which must read them defensively.
"""

from __future__ import annotations

import difflib
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

SAMPLES_DIR = Path(__file__).parent / "seed_samples"

# Ids the samples themselves carry.
CATALOG_ID = "1181538518900034"  # the catalog node of the commerce_merchant_settings sample
HANDLE = "abc"  # the Batch API sample's handle
PRODUCT_ITEM_ID = "4405565689470921"  # the item of the products / item-errors samples
# Not in the seed: the page writes {upload-id}; any id does.
UPLOAD_ID = "9100000000000001"
UPLOAD_END_TIME = "2026-06-01T10:05:00+0000"


def sample_text(name: str) -> str:
    """The sample exactly as the page prints it."""
    return (SAMPLES_DIR / f"{name}.txt").read_text(encoding="utf-8")


def _clean(raw: str) -> str:
    text = re.sub(r"^[ \t]*\.\.\.[ \t]*\n", "", raw, flags=re.M)  # "..." placeholder lines
    text = re.sub(r"\{,", "{", text)  # the stray comma of "[{," (products sample)
    text = re.sub(r",(\s*[}\]])", r"\1", text)  # trailing commas
    return re.sub(r"“([^“”\"]*)”", r'"\1"', text)  # curly quotes delimiting a value


def seed_json(name: str) -> Any:
    """The sample parsed, after the edits listed in the module docstring (and only those)."""
    return json.loads(_clean(sample_text(name)))


def seed_edits(name: str) -> list[tuple[str, str]]:
    """Every (printed, parsed-as) text difference ``seed_json`` introduces, in order."""
    raw = sample_text(name)
    cleaned = _clean(raw)
    matcher = difflib.SequenceMatcher(None, raw, cleaned, autojunk=False)
    return [(raw[i1:i2], cleaned[j1:j2]) for op, i1, i2, j1, j2 in matcher.get_opcodes() if op != "equal"]


META_UNKNOWN_OBJECT = {
    "error": {
        "message": "Unsupported get request. Object with ID '{id}' does not exist, cannot be loaded due to missing "
        "permissions, or does not support this operation.",
        "type": "GraphMethodException",
        "code": 100,
        "error_subcode": 33,
        "fbtrace_id": "SeedStandin",
    }
}


@dataclass
class SeedStandin:
    """The stand-in server. ``retailer_ids`` answers the product item lookup (not in the seed); ``requests``
    records every call as (path after the version, query parameters)."""

    retailer_ids: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    def _json(self, body: Any, status: int = 200) -> Response:
        return Response(json.dumps(body), status=status, mimetype="application/json")

    def _unknown(self, object_id: str) -> Response:
        body = json.loads(json.dumps(META_UNKNOWN_OBJECT).replace("{id}", object_id))
        return self._json(body, 400)

    def app(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        path = re.sub(r"^/v\d+\.\d+/", "", request.path)
        params = dict(request.args)
        self.requests.append((path, params))
        if "access_token" in params or not request.headers.get("Authorization", "").startswith("Bearer "):
            response = self._json({"error": {"message": "token outside the header", "code": 190}}, 400)
        else:
            response = self._route(path, params)
        return response(environ, start_response)

    def _route(self, path: str, params: dict[str, str]) -> Response:
        priority = params.get("error_priority")
        fields = set((params.get("fields") or "").split(","))
        if path == "catalog_all_errors":
            return self._json(seed_json("catalog_all_errors"))
        if path == CATALOG_ID:
            return self._json(seed_json("commerce_merchant_settings"))
        if path == f"{CATALOG_ID}/external_event_sources":
            return self._json({"data": []})  # not in the seed
        if path == f"{CATALOG_ID}/check_batch_request_status":
            if params.get("handle") != HANDLE:
                return self._unknown(params.get("handle") or "")
            return self._json(seed_json("check_batch_request_status"))
        if path == f"{CATALOG_ID}/products":
            # The sample was requested with error_priority=HIGH; other priorities: not in the seed.
            return self._json(seed_json("products_with_errors") if priority == "HIGH" else {"data": []})
        if path == UPLOAD_ID:
            return self._json({"id": UPLOAD_ID, "end_time": UPLOAD_END_TIME})  # not in the seed
        if path == f"{UPLOAD_ID}/errors":
            # The sample was requested with error_priority=HIGH; other priorities: not in the seed.
            return self._json(seed_json("feed_upload_errors_high") if priority == "HIGH" else {"data": []})
        if path == PRODUCT_ITEM_ID and "errors" in fields:
            return self._json(seed_json("item_errors"))
        if re.fullmatch(r"\d+", path) and "retailer_id" in fields:
            rid = self.retailer_ids.get(path)  # not in the seed: the product item lookup
            return self._json({"retailer_id": rid, "id": path}) if rid else self._unknown(path)
        return self._unknown(path)

    def lookups(self) -> list[str]:
        """Product item ids looked up for their retailer_id (``fields=retailer_id`` only)."""
        return [p for p, q in self.requests if (q.get("fields") or "").split(",") == ["retailer_id"]]


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def serve(standin: SeedStandin) -> Iterator[SeedStandin]:
    """Run the stand-in on a free loopback port for the duration of the generator."""
    server = make_server("127.0.0.1", 0, standin.app, threaded=True, request_handler=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    standin.url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield standin
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
