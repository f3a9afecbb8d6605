"""What Kobi knows about each marketplace retailer: display name, website domains and product URL pattern.

The domains drive the QC rule "template_url_spec deep links must point to the merchant's website"; the URL
pattern is what the campaign template uses for ``template_url_spec.web.url``. Both are configurable: pass your
own mapping (e.g. from the registry or Dagster config) to :class:`RetailerDirectory`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass(frozen=True)
class RetailerInfo:
    key: str  # registry key: trendyol, hepsiburada, ...
    display_name: str
    domains: tuple[str, ...]  # the site and its subdomains count as the merchant's website
    # Web fallback of the deep link, with Meta template placeholders (unconfirmed real patterns: configurable).
    product_url_template: str

    @property
    def site_url(self) -> str:
        return f"https://www.{self.domains[0]}" if self.domains else ""

    def owns_url(self, url: str) -> bool:
        """True when ``url``'s host is one of the retailer's domains or a subdomain of one."""
        host = (urlsplit(url).hostname or "").lower()
        return any(host == d or host.endswith("." + d) for d in self.domains)


def _info(key: str, name: str, domain: str) -> RetailerInfo:
    return RetailerInfo(key, name, (domain,), f"https://www.{domain}/p/{{{{product.retailer_id}}}}")


DEFAULT_RETAILERS: dict[str, RetailerInfo] = {
    r.key: r
    for r in (
        _info("trendyol", "Trendyol", "trendyol.com"),
        _info("hepsiburada", "Hepsiburada", "hepsiburada.com"),
        _info("n11", "n11", "n11.com"),
        _info("amazon_tr", "Amazon TR", "amazon.com.tr"),
        _info("pazarama", "Pazarama", "pazarama.com"),
    )
}


@dataclass(frozen=True)
class RetailerDirectory:
    """Lookup of :class:`RetailerInfo` by key; unknown retailers get a title-cased name and no domain."""

    retailers: Mapping[str, RetailerInfo] = field(default_factory=lambda: dict(DEFAULT_RETAILERS))

    def get(self, key: str) -> RetailerInfo:
        info = self.retailers.get(key)
        if info is not None:
            return info
        name = " ".join(p.capitalize() for p in key.replace("-", "_").split("_"))
        return RetailerInfo(key, name, (), "")

    def name(self, key: str) -> str:
        return self.get(key).display_name


DEFAULT_DIRECTORY = RetailerDirectory()
