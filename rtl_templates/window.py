"""The synaptic engine's window/address generator: which frame word and weight word each clock reads.

For every output pixel (oh, ow), output group g (``pes`` output channels) and
window word (kernel tap ky, kx × channel word jc) the engine issues one word.
The generator holds the counters over (oh, ow, g, ky, kx, jc), innermost last,
and the addresses they step; on every ``issue`` it moves to the next word.
Addresses are stepped by constants (no products of indices in hardware).

The generator is a pluggable part of :class:`~.synapse.SynapticEngine`: any
:class:`AddressGenerator` with the same ports can replace it (the engine
takes a factory, :func:`default_address_generator` by default). Two ship here:

* :class:`LinearAddressGenerator` — a 1×1 map and a 1×1 kernel without
  padding (a linear layer): the frame word is the channel word.
* :class:`ConvAddressGenerator` — a sliding kh×kw window with stride and
  zero padding; taps in the padding raise ``pad`` (the engine then reads a
  word no writer touches, whose counts are 0).

:func:`address_reference` is the plain-Python model of both: the sequence of
words of one frame, computed from the indices directly.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["WindowGeometry", "AddressGenerator", "LinearAddressGenerator", "ConvAddressGenerator",
           "default_address_generator", "address_reference"]


@dataclass(frozen=True)
class WindowGeometry:
    """Everything that fixes the order of the words an engine reads.

    Attributes
    ----------
    in_hw, kernel, stride, padding
        Input map (h, w), kernel (kh, kw), stride and zero padding, as ``(h, w)`` pairs.
    channel_words
        Frame words per input pixel (``conv_groups`` × :attr:`group_words`; ⌈in_channels / lanes⌉
        without groups).
    out_groups
        Output groups (⌈out_channels / pes⌉); each reads the whole window of its channels once.
    conv_groups
        Grouped convolution: output group g reads only the frame words of its convolution group
        ``g // (out_groups / conv_groups)`` (depthwise: one input channel per group). 1: dense.
    """

    in_hw: tuple[int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    channel_words: int = 1
    out_groups: int = 1
    conv_groups: int = 1

    def __post_init__(self):
        if self.conv_groups < 1 or self.channel_words % self.conv_groups or self.out_groups % self.conv_groups:
            raise ValueError(f"conv_groups {self.conv_groups} must divide channel_words {self.channel_words} "
                             f"and out_groups {self.out_groups}")

    @property
    def group_words(self) -> int:
        """Frame words per pixel that one convolution group reads (all of them when dense)."""
        return self.channel_words // self.conv_groups

    @property
    def out_hw(self) -> tuple[int, int]:
        (h, w), (kh, kw), (sh, sw), (ph, pw) = self.in_hw, self.kernel, self.stride, self.padding
        return (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1

    @property
    def has_pad(self) -> bool:
        return self.padding != (0, 0)

    @property
    def is_pointwise(self) -> bool:
        """A 1×1 map and kernel without padding: a linear layer."""
        return (tuple(self.in_hw) == (1, 1) and tuple(self.kernel) == (1, 1) and not self.has_pad
                and self.conv_groups == 1)

    @property
    def frame_words(self) -> int:
        """Words per frame bank (H·W·channel words)."""
        return self.in_hw[0] * self.in_hw[1] * self.channel_words

    @property
    def words_per_frame(self) -> int:
        """Words issued per frame (one inference)."""
        ho, wo = self.out_hw
        return ho * wo * self.weight_words

    @property
    def weight_words(self) -> int:
        """Weight words (the words of one output pixel: out groups × taps × group words)."""
        return self.out_groups * self.kernel[0] * self.kernel[1] * self.group_words

    @property
    def reads_last(self) -> bool:
        """Whether some window reads the map's last row and last column (so the frame's last word)."""
        (h, w), (kh, kw), (sh, sw), (ph, pw) = self.in_hw, self.kernel, self.stride, self.padding
        ho, wo = self.out_hw
        return (any(o * sh - ph <= h - 1 <= o * sh - ph + kh - 1 for o in range(ho))
                and any(o * sw - pw <= w - 1 <= o * sw - pw + kw - 1 for o in range(wo)))


def address_reference(geo: WindowGeometry) -> list[dict[str, int]]:
    """The words of one frame in issue order, from the indices (the generators' model).

    Each entry: ``local`` (frame word (ih·W + iw)·Jc + q·Jg + jc for output group g of convolution
    group q, also for taps in the padding), ``pad``, ``waddr`` (weight word), ``first`` (first word of a group), ``word_last`` (last word
    of a group), ``last_group`` (the group is the pixel's last) and ``frame_last``.
    """
    (h, w), (kh, kw), (sh, sw), (ph, pw) = geo.in_hw, geo.kernel, geo.stride, geo.padding
    ho, wo = geo.out_hw
    jn, gn, jg = geo.channel_words, geo.out_groups, geo.group_words
    per_q = gn // geo.conv_groups
    out = []
    for oh in range(ho):
        for ow in range(wo):
            for g in range(gn):
                for ky in range(kh):
                    for kx in range(kw):
                        for jc in range(jg):
                            ih, iw = oh * sh - ph + ky, ow * sw - pw + kx
                            last = ky == kh - 1 and kx == kw - 1 and jc == jg - 1
                            out.append({
                                "local": (ih * w + iw) * jn + (g // per_q) * jg + jc,
                                "pad": int(not (0 <= ih < h and 0 <= iw < w)),
                                "waddr": ((g * kh + ky) * kw + kx) * jg + jc,
                                "first": int(ky == 0 and kx == 0 and jc == 0),
                                "word_last": int(last),
                                "last_group": int(g == gn - 1),
                                "frame_last": int(last and g == gn - 1 and oh == ho - 1 and ow == wo - 1),
                            })
    return out


class AddressGenerator(wiring.Component):
    """Base of the address generators: the counters and the weight address; subclasses add the frame address.

    Parameters
    ----------
    geometry
        The window (:class:`WindowGeometry`).

    Ports
    -----
    issue : In(1)
        A word is issued this clock: step to the next one at the clock edge.
    local : Out
        Frame word of the current tap, within a bank.
    pad : Out(1)
        The tap lies in the zero padding (only when the geometry has padding or a window).
    waddr : Out
        Weight word of the current tap (``(g·taps + ky·kw + kx)·Jc + jc``).
    first, word_last, last_group, frame_last : Out(1)
        The current word is its group's first, its group's last; the group is the pixel's
        last; the word is the frame's last.

    Subclasses implement :meth:`frame_address` (and set ``has_pad_port``); a new addressing scheme
    is one more subclass, passed to the engine as its ``address_generator``.

    Every output is a function of registers only, so the engine may compute ``issue`` from them.
    """

    def __init__(self, geometry: WindowGeometry):
        self.geometry = geometry
        members = {
            "issue": In(1),
            "local": Out(self.local_shape()),
            "waddr": Out(range(geometry.weight_words)),
            "first": Out(1), "word_last": Out(1), "last_group": Out(1), "frame_last": Out(1),
        }
        if self.has_pad_port:
            members["pad"] = Out(1)
        members.update(self.extra_members())
        super().__init__(members)

    has_pad_port = False

    def extra_members(self) -> dict:
        """Ports a subclass adds (none here)."""
        return {}

    def local_shape(self):
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({getattr(self, 'geometry', '?')!r})"

    def elaborate(self, platform):
        m = Module()
        geo = self.geometry
        kh, kw = geo.kernel
        ho, wo = geo.out_hw
        jn, gn = geo.group_words, geo.out_groups
        oh, ow = Signal(range(ho)), Signal(range(wo))
        g, ky, kx, jc = Signal(range(gn)), Signal(range(kh)), Signal(range(kw)), Signal(range(jn))
        counters = ((jc, jn), (kx, kw), (ky, kh), (g, gn), (ow, wo), (oh, ho))
        wraps = []
        for ctr, size in counters:
            wrap = Signal(name=f"{ctr.name}_wrap")
            m.d.comb += wrap.eq(ctr == size - 1)
            wraps.append(wrap)
        # step[i]: counter i increments (all inner ones wrap); step[6]: the whole frame wraps
        step = []
        for i in range(len(counters) + 1):
            inner = Const(1)
            for w_ in wraps[:i]:
                inner = inner & w_
            s_ = Signal(name=f"step{i}")
            m.d.comb += s_.eq(inner & (~wraps[i] if i < len(counters) else Const(1)))
            step.append(s_)
        group_wrap = Signal()
        waddr = Signal.like(self.waddr)
        m.d.comb += [
            self.word_last.eq(wraps[0] & wraps[1] & wraps[2]),
            group_wrap.eq(self.word_last & wraps[3]),
            self.frame_last.eq(group_wrap & wraps[4] & wraps[5]),
            self.first.eq((ky == 0) & (kx == 0) & (jc == 0)),
            self.last_group.eq(wraps[3]),
            self.waddr.eq(waddr),
        ]
        with m.If(self.issue):
            m.d.sync += waddr.eq(Mux(group_wrap, 0, waddr + 1))
            for i, ((ctr, _size), w_) in enumerate(zip(counters, wraps)):
                inner = Const(1)
                for w2 in wraps[:i]:
                    inner = inner & w2
                with m.If(inner):
                    m.d.sync += ctr.eq(Mux(w_, 0, ctr + 1))
        self.frame_address(m, step, jc)
        return m

    def frame_address(self, m: Module, step, jc) -> None:
        """Drive ``local`` (and ``pad``) from the counters; ``step[i]``: counter i is the outermost that moves."""
        raise NotImplementedError


class LinearAddressGenerator(AddressGenerator):
    """A linear layer's generator (1×1 map and kernel, no padding): the frame word is the channel word."""

    def __init__(self, geometry: WindowGeometry):
        if not geometry.is_pointwise:
            raise ValueError(f"LinearAddressGenerator needs a 1x1 map and kernel without padding, not {geometry!r}")
        super().__init__(geometry)

    def local_shape(self):
        return range(self.geometry.channel_words)

    def frame_address(self, m, step, jc):
        m.d.comb += self.local.eq(jc)


class ConvAddressGenerator(AddressGenerator):
    """A sliding window with stride and zero padding (see the module docstring).

    Every register is "the value at the current counters"; on each issue one of them moves by a
    constant, chosen by the outermost counter that steps.
    """

    has_pad_port = True

    def _bounds(self):
        geo = self.geometry
        (_h, w), (kh, kw), (sh, sw), (ph, pw) = geo.in_hw, geo.kernel, geo.stride, geo.padding
        ho, wo = geo.out_hw
        jn = geo.channel_words
        ih_hi = (ho - 1) * sh + kh - ph
        iw_hi = (wo - 1) * sw + kw - pw
        a_lo = (-ph * w - pw) * jn
        a_hi = (ih_hi * w + iw_hi + 1) * jn + w * jn
        return ih_hi, iw_hi, a_lo, a_hi

    def local_shape(self):
        _, _, a_lo, a_hi = self._bounds()
        return range(min(a_lo, 0), a_hi + 1)

    def frame_address(self, m, step, jc):
        geo = self.geometry
        (h, w), (sh, sw), (ph, pw) = geo.in_hw, geo.stride, geo.padding
        jn = geo.channel_words
        ih_hi, iw_hi, a_lo, a_hi = self._bounds()
        ih, ih0 = Signal(range(-ph, ih_hi + 1), init=-ph), Signal(range(-ph, ih_hi + 1), init=-ph)
        iw, iw0 = Signal(range(-pw, iw_hi + 1), init=-pw), Signal(range(-pw, iw_hi + 1), init=-pw)
        addr = [Signal(range(min(a_lo, 0), a_hi + 1), init=a_lo, name=n) for n in ("a_line", "a_pix", "a_row", "a_tap", "a_word")]
        a_line, a_pix, a_row, a_tap, local = addr
        # the window's corner and output group offset, for subclasses that step more registers alongside
        self._corner = (ih0, iw0)
        self._gofs = None
        m.d.comb += self.pad.eq((ih < 0) | (ih >= h) | (iw < 0) | (iw >= w))
        if geo.conv_groups == 1:
            m.d.comb += self.local.eq(local)
        else:
            # grouped: the words of output group g's convolution group start q·Jg into the pixel;
            # gq counts the output groups within a convolution group
            per_q = geo.out_groups // geo.conv_groups
            jg = geo.group_words
            gq = Signal(range(per_q))
            gofs = Signal(range((geo.conv_groups - 1) * jg + 1))
            m.d.comb += self.local.eq(local + gofs)
            self._gofs = gofs
            with m.If(self.issue & step[3]):
                m.d.sync += gq.eq(Mux(gq == per_q - 1, 0, gq + 1))
                with m.If(gq == per_q - 1):
                    m.d.sync += gofs.eq(gofs + jg)
            with m.Elif(self.issue & (step[4] | step[5] | step[6])):
                m.d.sync += [gq.eq(0), gofs.eq(0)]
        with m.If(self.issue):
            with m.If(step[0]):  # next channel word
                m.d.sync += local.eq(local + 1)
            with m.Elif(step[1]):  # next kernel column
                m.d.sync += [iw.eq(iw + 1), a_tap.eq(a_tap + jn), local.eq(a_tap + jn)]
            with m.Elif(step[2]):  # next kernel row
                m.d.sync += [iw.eq(iw0), ih.eq(ih + 1), a_row.eq(a_row + w * jn), a_tap.eq(a_row + w * jn),
                             local.eq(a_row + w * jn)]
            with m.Elif(step[3]):  # next output group: the same window again
                m.d.sync += [ih.eq(ih0), iw.eq(iw0), a_row.eq(a_pix), a_tap.eq(a_pix), local.eq(a_pix)]
            with m.Elif(step[4]):  # next output column
                m.d.sync += [iw0.eq(iw0 + sw), iw.eq(iw0 + sw), ih.eq(ih0)]
                m.d.sync += [s.eq(a_pix + sw * jn) for s in (a_pix, a_row, a_tap, local)]
            with m.Elif(step[5]):  # next output row
                m.d.sync += [ih0.eq(ih0 + sh), ih.eq(ih0 + sh), iw0.eq(-pw), iw.eq(-pw)]
                m.d.sync += [s.eq(a_line + sh * w * jn) for s in (a_line, a_pix, a_row, a_tap, local)]
            with m.Else():  # next frame
                m.d.sync += [ih0.eq(-ph), ih.eq(-ph), iw0.eq(-pw), iw.eq(-pw)]
                m.d.sync += [s.eq(a_lo) for s in addr]


def default_address_generator(geometry: WindowGeometry) -> AddressGenerator:
    """The generator the engine uses unless given another: linear for a pointwise geometry, else conv."""
    return LinearAddressGenerator(geometry) if geometry.is_pointwise else ConvAddressGenerator(geometry)
