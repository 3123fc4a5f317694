// bitspike co-simulation harness: streams a batch of images through a Verilated
// bitspike_top and records, per image, the result beats and cycle counts, and
// (with --taps) every debug-tap value with its cycle.
//
// The design-specific parts (top class, input size, result count, tap ports)
// come from "cosim_design.h", which bitspike.sim.cosim generates per design.
// Python talks to this program in batches through two binary files (formats in
// cosim.py: _write_input / _read_output); it never steps the clock itself.
//
// Usage: sim --input IN --output OUT [--taps] [--sequential] [--seed S]
//            [--stall-in PERMILLE] [--stall-out PERMILLE] [--max-idle CYCLES]
//            [--vcd FILE --vcd-from C --vcd-to C]
//        sim --bare CYCLES --input IN   (offer the batch's pixels and clock, nothing else:
//                                        the limit the harness overhead is measured against)

#include "cosim_design.h"
#include COSIM_TOP_HEADER
#include "verilated.h"
#if BITSPIKE_TRACE
#include "verilated_vcd_c.h"
#endif

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

// Port reads of any Verilator width as raw unsigned 64-bit (upper bits of wider ports dropped).
template <typename T>
inline uint64_t u64(const T& v) { return static_cast<uint64_t>(v); }
template <std::size_t N>
inline uint64_t u64(const VlWide<N>& v) {
    return static_cast<uint64_t>(v[0]) | (N > 1 ? static_cast<uint64_t>(v[1]) << 32 : 0);
}

// xorshift32: the same generator the Icarus testbench uses, so stalls match cycle for cycle.
struct Rng {
    uint32_t s;
    explicit Rng(uint32_t seed) : s(seed ? seed : 0x9e3779b9u) {}
    uint32_t next() { s ^= s << 13; s ^= s >> 17; s ^= s << 5; return s; }
    bool chance(uint32_t permille) { return permille && (next() % 1000u) < permille; }
};

// A tap value as COSIM_TAP_WORDS 64-bit words, least significant first: ports up to 64 bits are
// plain integers in Verilator, wider ones VlWide<N> arrays of 32-bit words (packed spikes reach
// T * B_s = 1024 bits).
template <typename T>
inline void store_words(const T& v, uint64_t* dst) {
    dst[0] = static_cast<uint64_t>(v);
    for (uint32_t k = 1; k < COSIM_TAP_WORDS; ++k) dst[k] = 0;
}
template <std::size_t N>
inline void store_words(const VlWide<N>& v, uint64_t* dst) {
    for (uint32_t k = 0; k < COSIM_TAP_WORDS; ++k) {
        const uint64_t lo = 2 * k < N ? static_cast<uint64_t>(v[2 * k]) : 0;
        const uint64_t hi = 2 * k + 1 < N ? static_cast<uint64_t>(v[2 * k + 1]) : 0;
        dst[k] = lo | (hi << 32);
    }
}

// one record: u64 (tap in the low 32 bits), u64 cycle, COSIM_TAP_WORDS u64 of value
constexpr std::size_t kRecordWords = 2 + COSIM_TAP_WORDS;

// CPU time of this process: the machine is shared, and wall time would count the time other
// processes held the core; the loops are single-threaded, so CPU time is their own cost.
uint64_t cpu_ns() {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

[[noreturn]] void die(const char* msg, const char* arg = "") {
    std::fprintf(stderr, "bitspike harness: %s%s\n", msg, arg);
    std::exit(2);
}

uint64_t parse_u64(const char* s, const char* opt) {
    char* end = nullptr;
    unsigned long long v = std::strtoull(s, &end, 10);
    if (!*s || *end) die("expected a non-negative integer after ", opt);
    return v;
}

struct Options {
    std::string input, output, vcd;
    bool taps = false, sequential = false;
    uint32_t seed = 1, stall_in = 0, stall_out = 0;
    uint64_t max_idle = 1000000, vcd_from = 0, vcd_to = UINT64_MAX, bare = 0;
};

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto val = [&](void) -> const char* {
            if (i + 1 >= argc) die("missing value after ", a.c_str());
            return argv[++i];
        };
        if (a == "--input") o.input = val();
        else if (a == "--output") o.output = val();
        else if (a == "--taps") o.taps = true;
        else if (a == "--sequential") o.sequential = true;
        else if (a == "--seed") o.seed = static_cast<uint32_t>(parse_u64(val(), "--seed"));
        else if (a == "--stall-in") o.stall_in = static_cast<uint32_t>(parse_u64(val(), "--stall-in"));
        else if (a == "--stall-out") o.stall_out = static_cast<uint32_t>(parse_u64(val(), "--stall-out"));
        else if (a == "--max-idle") o.max_idle = parse_u64(val(), "--max-idle");
        else if (a == "--vcd") o.vcd = val();
        else if (a == "--vcd-from") o.vcd_from = parse_u64(val(), "--vcd-from");
        else if (a == "--vcd-to") o.vcd_to = parse_u64(val(), "--vcd-to");
        else if (a == "--bare") o.bare = parse_u64(val(), "--bare");
        else die("unknown option ", a.c_str());
    }
    if (!o.bare && (o.input.empty() || o.output.empty())) die("--input and --output are required");
    if (o.stall_in > 1000 || o.stall_out > 1000) die("stall rates are per mille: 0 ... 1000");
    return o;
}

void write_all(FILE* f, const void* p, size_t n) {
    if (n && std::fwrite(p, 1, n, f) != n) die("cannot write the output file");
}

constexpr uint32_t kResults = COSIM_NUM_CLASSES + 1;

}  // namespace

int main(int argc, char** argv) {
    Options opt = parse(argc, argv);
    auto ctx = std::make_unique<VerilatedContext>();
    ctx->commandArgs(1, argv);  // keep +verilator+ options away from ours
#if BITSPIKE_TRACE
    if (!opt.vcd.empty()) ctx->traceEverOn(true);
#endif
    auto top = std::make_unique<COSIM_TOP>(ctx.get());
#if BITSPIKE_TRACE
    std::unique_ptr<VerilatedVcdC> vcd;
    if (!opt.vcd.empty()) {
        vcd = std::make_unique<VerilatedVcdC>();
        top->trace(vcd.get(), 99);
        vcd->open(opt.vcd.c_str());
    }
#else
    if (!opt.vcd.empty()) die("this executable was built without --trace; cannot write ", opt.vcd.c_str());
#endif

    // reset: a few cycles with rst high, no stream activity
    top->clk = 0;
    top->rst = 1;
    top->COSIM_PIX_VALID = 0;
    top->COSIM_RES_READY = 0;
    for (int i = 0; i < 4; ++i) {
        top->clk = 0; top->eval();
        top->clk = 1; top->eval();
    }
    top->rst = 0;
    top->clk = 0;

    // ---- read the batch: "BSI1", u32 images, u32 input_size, u32 bytes per value, then values
    FILE* in = std::fopen(opt.input.c_str(), "rb");
    if (!in) die("cannot open input ", opt.input.c_str());
    char magic[4];
    uint32_t hdr[3];
    if (std::fread(magic, 1, 4, in) != 4 || std::memcmp(magic, "BSI1", 4) != 0) die("not a bitspike batch file: ", opt.input.c_str());
    if (std::fread(hdr, 4, 3, in) != 3) die("truncated batch header in ", opt.input.c_str());
    const uint64_t n_images = hdr[0];
    const uint32_t in_size = hdr[1], vbytes = hdr[2];
    if (in_size != COSIM_INPUT_SIZE) die("batch input size does not match the design (COSIM_INPUT_SIZE)");
    if (vbytes != 1 && vbytes != 2) die("batch values must be 1 or 2 bytes");
    std::vector<uint16_t> pixels(n_images * in_size);
    if (vbytes == 1) {
        std::vector<uint8_t> raw(pixels.size());
        if (std::fread(raw.data(), 1, raw.size(), in) != raw.size()) die("truncated batch data in ", opt.input.c_str());
        for (size_t i = 0; i < raw.size(); ++i) pixels[i] = raw[i];
    } else if (std::fread(pixels.data(), 2, pixels.size(), in) != pixels.size()) {
        die("truncated batch data in ", opt.input.c_str());
    }
    std::fclose(in);

    if (opt.bare) {
        // The bare loop: what a minimal hand-written C++ testbench costs. It offers the same
        // pixels (the next one whenever the last was taken) and always takes results, and does
        // nothing else: no bookkeeping, no result capture. The harness is measured against it.
        top->COSIM_RES_READY = 1;
        top->COSIM_PIX_VALID = 1;
        const uint64_t total = pixels.size();
        uint64_t p = 0;
        auto t0 = std::chrono::steady_clock::now();
        const uint64_t c0 = cpu_ns();
        for (uint64_t c = 0; c < opt.bare; ++c) {
            top->COSIM_PIX_PAYLOAD = pixels[p];
            top->clk = 0; top->eval();
            if (top->COSIM_PIX_READY && ++p == total) p = 0;
            top->clk = 1; top->eval();
        }
        const double cpu = (cpu_ns() - c0) * 1e-9;
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::printf("{\"cycles\": %llu, \"seconds\": %.6f, \"cpu_seconds\": %.6f, \"cycles_per_second\": %.1f}\n",
                    static_cast<unsigned long long>(opt.bare), s, cpu, opt.bare / cpu);
        top->final();
        return 0;
    }

    std::vector<uint64_t> start(n_images, 0), end(n_images, 0), results(n_images * kResults, 0);
    std::vector<uint64_t> taps;  // kRecordWords per record
    if (opt.taps) taps.reserve(kRecordWords << 16);
    // values each tap must show for the whole batch (0: unknown); a traced run clocks on after the
    // last result until every tap has shown them, since an engine may still be computing values no
    // later layer reads (the rows a pooling window leaves over) when the class beat is out
    std::vector<uint64_t> tap_target, tap_seen(COSIM_NUM_TAPS, 0);
#define COSIM_TAP_TARGET(id, payload, valid, count) tap_target.push_back(n_images * (count));
    COSIM_TAPS(COSIM_TAP_TARGET)
#undef COSIM_TAP_TARGET
    uint64_t taps_short = 0;
    for (uint64_t t : tap_target) taps_short += t > 0;

    Rng rng(opt.seed);
    uint64_t cycle = 0, last_progress = 0;
    uint64_t img_in = 0, pix = 0, img_out = 0, beat = 0;
    bool pix_valid = false;  // a presented beat stays valid until taken (stream rule)
    uint32_t status = 0;
    auto t0 = std::chrono::steady_clock::now();
    const uint64_t c0 = cpu_ns();

    uint64_t last_tap = 0;
    while (img_out < n_images || (opt.taps && taps_short > 0)) {
        const bool draining = img_out >= n_images;
        // drive inputs for this cycle (clock low)
        if (!pix_valid && img_in < n_images && (!opt.sequential || img_in == img_out))
            pix_valid = !rng.chance(opt.stall_in);
        top->COSIM_PIX_VALID = pix_valid;
        if (pix_valid) top->COSIM_PIX_PAYLOAD = pixels[img_in * in_size + pix];
        // (no results are taken while draining taps: every image's beats are in, and the arrays end there)
        const bool res_ready = !rng.chance(opt.stall_out) && !draining;
        top->COSIM_RES_READY = res_ready;
        top->clk = 0;
        top->eval();
#if BITSPIKE_TRACE
        if (vcd && cycle >= opt.vcd_from && cycle <= opt.vcd_to) vcd->dump(2 * cycle);
#endif
        // sample the handshakes the rising edge will act on
        const bool in_fire = pix_valid && top->COSIM_PIX_READY;
        const bool out_fire = res_ready && top->COSIM_RES_VALID;
        if (opt.taps) {
#define COSIM_RECORD_TAP(id, payload, valid, count)                  \
    if (top->valid) {                                                \
        const std::size_t at = taps.size();                          \
        taps.resize(at + kRecordWords);                              \
        taps[at] = id;                                               \
        taps[at + 1] = cycle;                                        \
        store_words(top->payload, &taps[at + 2]);                    \
        if (++tap_seen[id] == tap_target[id]) --taps_short;          \
        last_tap = cycle;                                            \
    }
            COSIM_TAPS(COSIM_RECORD_TAP)
#undef COSIM_RECORD_TAP
        }
        if (out_fire) {
            results[img_out * kResults + beat] = u64(top->COSIM_RES_PAYLOAD);
            if (++beat == kResults) {
                end[img_out] = cycle;
                beat = 0;
                ++img_out;
            }
            last_progress = cycle;
        }
        top->clk = 1;
        top->eval();
#if BITSPIKE_TRACE
        if (vcd && cycle >= opt.vcd_from && cycle <= opt.vcd_to) vcd->dump(2 * cycle + 1);
#endif
        if (in_fire) {
            if (pix == 0) start[img_in] = cycle;
            pix_valid = false;
            if (++pix == in_size) {
                pix = 0;
                ++img_in;
            }
            last_progress = cycle;
        }
        ++cycle;
        if (draining && cycle - std::max(last_progress, last_tap) > opt.max_idle) {
            break;  // a tap short of values: the comparison names the missing ones
        }
        if (!draining && cycle - last_progress > opt.max_idle) {
            std::fprintf(stderr,
                         "bitspike harness: no stream progress for %llu cycles at cycle %llu: image %llu pixel %llu "
                         "sent, image %llu result beat %llu awaited\n",
                         static_cast<unsigned long long>(opt.max_idle), static_cast<unsigned long long>(cycle),
                         static_cast<unsigned long long>(img_in), static_cast<unsigned long long>(pix),
                         static_cast<unsigned long long>(img_out), static_cast<unsigned long long>(beat));
            status = 1;
            break;
        }
    }
    const uint64_t loop_cpu_ns = cpu_ns() - c0;
    const uint64_t loop_ns = static_cast<uint64_t>(
        std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count());
#if BITSPIKE_TRACE
    if (vcd) vcd->close();
#endif
    top->final();

    // ---- write the results: "BSR1", u32 images, u32 results per image, u32 taps, u32 status,
    // u32 images done, u64 cycles, u64 loop wall ns, u64 loop CPU ns, then per image u64 start, u64 end, u64 results[],
    // then u64 record count and the records (u32 tap, u32 0, u64 cycle, COSIM_TAP_WORDS u64 of value)
    FILE* out = std::fopen(opt.output.c_str(), "wb");
    if (!out) die("cannot open output ", opt.output.c_str());
    write_all(out, "BSR1", 4);
    const uint32_t h32[5] = {static_cast<uint32_t>(n_images), kResults, COSIM_NUM_TAPS, status,
                             static_cast<uint32_t>(img_out)};
    write_all(out, h32, sizeof h32);
    const uint64_t h64[3] = {cycle, loop_ns, loop_cpu_ns};
    write_all(out, h64, sizeof h64);
    for (uint64_t i = 0; i < n_images; ++i) {
        write_all(out, &start[i], 8);
        write_all(out, &end[i], 8);
        write_all(out, &results[i * kResults], 8 * kResults);
    }
    const uint64_t n_rec = taps.size() / kRecordWords;
    write_all(out, &n_rec, 8);
    write_all(out, taps.data(), taps.size() * sizeof(uint64_t));
    if (std::fclose(out) != 0) die("cannot finish the output file ", opt.output.c_str());
    return status ? 3 : 0;
}
