"""Radio transfer cost: a packetization model in the style of Krug & O'Nils (IEEE Access 7, 2019).

The payload is pushed down a stack of layers. Each layer cuts what it gets from above into PDUs of at most
``mtu_bytes`` (its header included): per upper PDU (fragmentation, e.g. 6LoWPAN) or over the whole byte
stream (``concatenate``, e.g. LTE MAC filling transport blocks). The bottom layer's PDUs are the frames.
Per frame the radio transmits (``t_tx``: PHY overhead + payload at the PHY rate, or a fixed slot time),
listens (``t_rx``: ACK and inter-frame spaces) and waits (``t_wait``: idle gaps such as a LoRa RX delay).
Retransmissions scale the per-frame terms by 1/(1 - PER). Energy = P_tx t_tx + P_rx t_rx + P_idle t_wait,
plus the setup (and optional tail) states.

All constants live in the profiles (``conf/radio/*.yaml``), each with its source; this module has none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import List, Optional  # noqa: UP035 - typing generics for the config builder

from objectives.costs._checks import check_numbers


@dataclass(frozen=True)
class LayerSpec:
    """One protocol layer.

    Attributes:
        name: for reports only.
        mtu_bytes: largest PDU of this layer, header included (bytes; may be fractional for bit-sized
            transport blocks).
        header_bytes: header of the first PDU of each upper PDU (or of every PDU when concatenating).
        next_header_bytes: header of the following fragments; None means the same as ``header_bytes``.
        concatenate: treat the upper PDUs as one byte stream (transport blocks) instead of fragmenting
            each one separately.
    """

    name: str
    mtu_bytes: float
    header_bytes: float = 0.0
    next_header_bytes: Optional[float] = None  # noqa: UP045
    concatenate: bool = False

    def __post_init__(self) -> None:
        check_numbers(self, ("mtu_bytes",), ("header_bytes",))
        nxt = self.header_bytes if self.next_header_bytes is None else self.next_header_bytes
        if nxt < 0 or max(self.header_bytes, nxt) >= self.mtu_bytes:
            raise ValueError(f"LayerSpec {self.name!r}: headers ({self.header_bytes}, {nxt}) must be >= 0 and "
                             f"smaller than mtu_bytes={self.mtu_bytes}")


@dataclass(frozen=True)
class LoRaPHY:
    """Semtech LoRa time-on-air parameters (AN1200.13): T_sym = 2**sf / bw."""

    sf: int = 7
    bw_hz: float = 125_000.0
    coding_rate: int = 1  # 4/(4+cr)
    preamble_symbols: float = 8.0
    explicit_header: bool = True
    crc: bool = True
    low_dr_optimize: bool = False

    def __post_init__(self) -> None:
        if not 6 <= self.sf <= 12:
            raise ValueError(f"LoRaPHY.sf={self.sf} must be in 6..12")
        if not 1 <= self.coding_rate <= 4:
            raise ValueError(f"LoRaPHY.coding_rate={self.coding_rate} must be in 1..4")
        check_numbers(self, ("bw_hz",))

    def airtime_s(self, frame_bytes: float) -> float:
        t_sym = 2 ** self.sf / self.bw_hz
        de = 1 if self.low_dr_optimize else 0
        h = 0 if self.explicit_header else 1
        n = 8 + max(math.ceil((8 * frame_bytes - 4 * self.sf + 28 + 16 * self.crc - 20 * h)
                              / (4 * (self.sf - 2 * de))) * (self.coding_rate + 4), 0)
        return (self.preamble_symbols + 4.25 + n) * t_sym


@dataclass(frozen=True)
class RadioProfile:
    """A radio technology. Powers in mW, times in s, rates in bit/s.

    Attributes:
        layers: protocol stack from the top (network) to the bottom (frames).
        phy_rate_bps: PHY bit rate for frame airtime (ignored where ``frame_time_s`` > 0 or ``lora``).
        phy_overhead_bytes: bytes added on air per frame (preamble, access address, CRC...).
        phy_preamble_s: fixed airtime per frame on top of the bytes (OFDM preambles).
        frame_time_s: if > 0, every frame takes exactly this long on air (LTE TTIs, NB-IoT RUs).
        ack_s: time listening for the acknowledgement of each frame.
        ifs_s, ifs_per_frame: inter-frame space and how many per frame; the radio listens meanwhile.
        wait_s: idle time per frame (backoff, scheduling or RX delays).
        frames_per_event, event_interval_s: BLE connection events: at most this many frames per event;
            the rest of each interval is idle (0 = no events, frames back to back).
        rx_gap_period_s, rx_gap_s: periodic downlink gaps the radio spends listening (NB-IoT).
        per: packet error rate; per-frame terms are scaled by 1/(1 - per).
        p_tx_mw, p_rx_mw, p_idle_mw: power while transmitting, listening and idle.
        setup_s, setup_mw: connection setup before the transfer (wake, RRC promotion, association); counted
            in latency and energy when ``count_setup``.
        tail_s, tail_mw: state held after the transfer (RRC tail); counted in energy when ``count_tail``.
            Both default to off: a node streaming frames keeps its link up (an assumption each profile
            restates); set them for a node that wakes, sends one payload and sleeps.
        duty_cycle: regulatory fraction of time on air (1 = none); ``max_period_s`` bounds the wall-clock
            time a payload may take under it, beyond which the transfer is refused.
        lora: LoRa time-on-air model instead of the PHY rate.
    """

    name: str
    layers: List[LayerSpec]  # noqa: UP006
    p_tx_mw: float
    p_rx_mw: float
    p_idle_mw: float
    phy_rate_bps: float = 0.0
    phy_overhead_bytes: float = 0.0
    phy_preamble_s: float = 0.0
    frame_time_s: float = 0.0
    ack_s: float = 0.0
    ifs_s: float = 0.0
    ifs_per_frame: int = 0
    wait_s: float = 0.0
    frames_per_event: int = 0
    event_interval_s: float = 0.0
    rx_gap_period_s: float = 0.0
    rx_gap_s: float = 0.0
    per: float = 0.0
    setup_s: float = 0.0
    setup_mw: float = 0.0
    tail_s: float = 0.0
    tail_mw: float = 0.0
    count_setup: bool = False
    count_tail: bool = False
    duty_cycle: float = 1.0
    max_period_s: float = 3600.0
    lora: Optional[LoRaPHY] = None  # noqa: UP045
    source: str = ""

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError(f"RadioProfile {self.name!r}: layers must not be empty")
        check_numbers(self, ("p_tx_mw", "max_period_s"), tuple(
            f.name for f in fields(self) if f.name not in ("p_tx_mw", "max_period_s")
            and (f.name.endswith(("_s", "_mw", "_bps", "_bytes")) or f.name in ("ifs_per_frame", "frames_per_event"))))
        if not 0 <= self.per < 1:
            raise ValueError(f"RadioProfile.per={self.per} must be in [0, 1)")
        if not 0 < self.duty_cycle <= 1:
            raise ValueError(f"RadioProfile.duty_cycle={self.duty_cycle} must be in (0, 1]")
        if self.lora is None and self.frame_time_s == 0 and self.phy_rate_bps <= 0:
            raise ValueError(f"RadioProfile {self.name!r}: set phy_rate_bps > 0, frame_time_s > 0 or lora")
        if self.frames_per_event and self.event_interval_s <= 0:
            raise ValueError(f"RadioProfile {self.name!r}: frames_per_event needs event_interval_s > 0")


@dataclass(frozen=True)
class TxCost:
    """Cost of sending one payload. Times in ms, energies in mJ."""

    radio: str
    payload_bytes: int
    frames: int
    bytes_on_air: float
    tx_ms: float
    rx_ms: float
    wait_ms: float
    setup_ms: float
    tail_ms: float
    tx_energy_mj: float
    rx_energy_mj: float
    wait_energy_mj: float
    setup_energy_mj: float
    tail_energy_mj: float
    feasible: bool = True
    reason: str = ""

    @property
    def transfer_ms(self) -> float:
        """Time on the link for the payload itself (no setup, no tail)."""
        return self.tx_ms + self.rx_ms + self.wait_ms

    @property
    def latency_ms(self) -> float:
        """Setup + transfer: when the edge has the whole payload."""
        return self.setup_ms + self.transfer_ms

    @property
    def transfer_energy_mj(self) -> float:
        return self.tx_energy_mj + self.rx_energy_mj + self.wait_energy_mj

    @property
    def energy_mj(self) -> float:
        return self.transfer_energy_mj + self.setup_energy_mj + self.tail_energy_mj


def frame_sizes(payload_bytes: float, layers: list[LayerSpec]) -> list[float]:
    """Bytes of every bottom-layer PDU (frame) that carries ``payload_bytes`` through ``layers``."""
    pdus: list[float] = [float(payload_bytes)] if payload_bytes > 0 else []
    for layer in layers:
        nxt = layer.header_bytes if layer.next_header_bytes is None else layer.next_header_bytes
        if layer.concatenate:
            total = sum(pdus)
            room = layer.mtu_bytes - layer.header_bytes
            n = math.ceil(total / room - 1e-9) if total > 0 else 0
            out = [layer.mtu_bytes] * max(n - 1, 0)
            if n:
                out.append(total - room * (n - 1) + layer.header_bytes)
            pdus = out
            continue
        out = []
        for sdu in pdus:
            first = layer.mtu_bytes - layer.header_bytes
            if sdu <= first:
                out.append(sdu + layer.header_bytes)
                continue
            out.append(layer.mtu_bytes)
            rest = sdu - first
            room = layer.mtu_bytes - nxt
            k = math.ceil(rest / room - 1e-9)
            out.extend([layer.mtu_bytes] * (k - 1))
            out.append(rest - room * (k - 1) + nxt)
        pdus = out
    return pdus


def transfer_cost(payload_bytes: int, radio: RadioProfile) -> TxCost:
    """Time and energy for the node to send ``payload_bytes`` of application data over ``radio``."""
    if payload_bytes < 0:
        raise ValueError(f"payload_bytes={payload_bytes} must be >= 0")
    frames = frame_sizes(payload_bytes, radio.layers)
    n = len(frames)
    retx = 1.0 / (1.0 - radio.per)
    on_air = sum(frames) + n * radio.phy_overhead_bytes
    if radio.lora is not None:
        tx = sum(radio.lora.airtime_s(f) for f in frames)
    elif radio.frame_time_s > 0:
        tx = n * radio.frame_time_s
    else:
        tx = on_air * 8 / radio.phy_rate_bps + n * radio.phy_preamble_s
    rx = n * (radio.ack_s + radio.ifs_s * radio.ifs_per_frame)
    wait = n * radio.wait_s
    if radio.frames_per_event and n:
        events = math.ceil(n / radio.frames_per_event)
        wait += max(0.0, events * radio.event_interval_s - (tx + rx + wait))
    if radio.rx_gap_period_s > 0:
        rx += math.floor((tx + rx + wait) / radio.rx_gap_period_s) * radio.rx_gap_s
    tx, rx, wait = tx * retx, rx * retx, wait * retx

    feasible, reason = True, ""
    if radio.duty_cycle < 1 and n:
        # each frame of airtime T must be followed by T (1/dc - 1) off air (e.g. 1 % in EU868)
        period = tx / radio.duty_cycle
        if period > radio.max_period_s:
            feasible = False
            reason = (f"{radio.name}: {payload_bytes} B need {tx:.1f} s on air, {period:.0f} s at duty cycle "
                      f"{radio.duty_cycle:g}, beyond max_period_s={radio.max_period_s:g}")
        wait = max(wait, period - tx - rx)
    setup = radio.setup_s if (n and radio.count_setup) else 0.0
    tail = radio.tail_s if (n and radio.count_tail) else 0.0
    ms = 1e3
    return TxCost(
        radio=radio.name, payload_bytes=payload_bytes, frames=n, bytes_on_air=on_air,
        tx_ms=tx * ms, rx_ms=rx * ms, wait_ms=wait * ms, setup_ms=setup * ms, tail_ms=tail * ms,
        # mW x s = mJ
        tx_energy_mj=radio.p_tx_mw * tx, rx_energy_mj=radio.p_rx_mw * rx, wait_energy_mj=radio.p_idle_mw * wait,
        setup_energy_mj=radio.setup_mw * setup, tail_energy_mj=radio.tail_mw * tail,
        feasible=feasible, reason=reason,
    )
