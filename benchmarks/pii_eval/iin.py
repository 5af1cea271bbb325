"""Issuer identification number (IIN) ranges of payment cards, written down as data.

Source: Wikipedia, "Payment card number", section "Issuer identification number (IIN)"
(https://en.wikipedia.org/wiki/Payment_card_number#Issuer_identification_number_(IIN)), read 2026-12-07.
Each row: network, (first, last) prefixes of one range (same number of digits), card lengths. Inactive
networks are kept: their numbers still turn up in old data. The eval builder draws numbers from every
row; the detector does not import this table (it has its own, in ftkit.pii.checks).
"""

from __future__ import annotations

from typing import NamedTuple

SOURCE = "https://en.wikipedia.org/wiki/Payment_card_number#Issuer_identification_number_(IIN)"


class IinRange(NamedTuple):
    network: str
    first: str
    last: str
    lengths: tuple[int, ...]


def _r(network: str, first: str, last: str | None, lengths: tuple[int, ...]) -> IinRange:
    return IinRange(network, first, last or first, lengths)


L16_19 = (16, 17, 18, 19)
L12_19 = (12, 13, 14, 15, 16, 17, 18, 19)

IIN_TABLE: tuple[IinRange, ...] = (
    _r("American Express", "34", None, (15,)),
    _r("American Express", "37", None, (15,)),
    _r("Bankcard", "5610", None, (16,)),
    _r("Bankcard", "560221", "560225", (16,)),
    _r("China T-Union", "31", None, (19,)),
    _r("China UnionPay", "62", None, L16_19),
    _r("Diners Club enRoute", "2014", None, (15,)),
    _r("Diners Club enRoute", "2149", None, (15,)),
    _r("Diners Club International", "36", None, (14, 15, 16, 17, 18, 19)),
    _r("Diners Club United States & Canada", "54", "55", (16,)),
    _r("Discover", "6011", None, L16_19),
    _r("Discover", "644", "649", L16_19),
    _r("Discover", "65", None, L16_19),
    _r("Discover", "622126", "622925", L16_19),
    _r("UkrCard", "60400100", "60420099", L16_19),
    _r("RuPay", "60", None, (16,)),
    _r("RuPay", "81", "82", (16,)),
    _r("RuPay", "508", None, (16,)),
    _r("RuPay", "353", None, (16,)),
    _r("RuPay", "356", None, (16,)),
    _r("InterPayment", "636", None, L16_19),
    _r("InstaPayment", "637", "639", (16,)),
    _r("JCB", "3528", "3589", L16_19),
    _r("Laser", "6304", None, L16_19),
    _r("Laser", "6706", None, L16_19),
    _r("Laser", "6709", None, L16_19),
    _r("Laser", "6771", None, L16_19),
    _r("Maestro UK", "6759", None, L12_19),
    _r("Maestro UK", "676770", None, L12_19),
    _r("Maestro UK", "676774", None, L12_19),
    _r("Maestro", "5018", None, L12_19),
    _r("Maestro", "5020", None, L12_19),
    _r("Maestro", "5038", None, L12_19),
    _r("Maestro", "5893", None, L12_19),
    _r("Maestro", "6761", "6763", L12_19),
    _r("Dankort", "5019", None, (16,)),
    _r("Visa/Dankort", "4571", None, (16,)),
    _r("Mir", "2200", "2204", L16_19),
    _r("BORICA", "2205", None, (16,)),
    _r("NPS Pridnestrovie", "6054740", "6054744", (16,)),
    _r("Mastercard", "2221", "2720", (16,)),
    _r("Mastercard", "51", "55", (16,)),
    _r("Solo", "6334", None, (16, 18, 19)),
    _r("Solo", "6767", None, (16, 18, 19)),
    _r("Switch", "4903", None, (16, 18, 19)),
    _r("Switch", "4905", None, (16, 18, 19)),
    _r("Switch", "4911", None, (16, 18, 19)),
    _r("Switch", "4936", None, (16, 18, 19)),
    _r("Switch", "564182", None, (16, 18, 19)),
    _r("Switch", "633110", None, (16, 18, 19)),
    _r("Switch", "6333", None, (16, 18, 19)),
    _r("Troy", "9792", None, (16,)),
    _r("Visa", "4", None, (13, 16, 19)),
    _r("Visa Electron", "4026", None, (16,)),
    _r("Visa Electron", "417500", None, (16,)),
    _r("Visa Electron", "4508", None, (16,)),
    _r("Visa Electron", "4844", None, (16,)),
    _r("Visa Electron", "4913", None, (16,)),
    _r("Visa Electron", "4917", None, (16,)),
    _r("UATP", "1", None, (15,)),
    _r("Verve", "506099", "506198", (16, 18, 19)),
    _r("Verve", "507865", "507964", (16, 18, 19)),
    _r("Verve", "650002", "650027", (16, 18, 19)),
    _r("LankaPay", "357111", None, (16,)),
    _r("UzCard", "8600", None, (16,)),
    _r("Humo", "9860", None, (16,)),
    _r("GPN", "1946", None, (16, 18, 19)),
    _r("GPN", "50", None, (16, 18, 19)),
    _r("GPN", "56", None, (16, 18, 19)),
    _r("GPN", "58", None, (16, 18, 19)),
    _r("GPN", "60", "63", (16, 18, 19)),
    _r("Napas", "9704", None, (16, 19)),
    _r("Meeza", "507808", None, (16,)),
)
