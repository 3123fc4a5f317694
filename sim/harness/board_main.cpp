// Simulated board: the Verilated bridge + accelerator (top "bitspike_board") driven
// through its serial lines.
//
// Bytes read from stdin are sent into the design's rx line as 8N1 frames of
// CLOCKS_PER_BIT cycles per bit; bytes the design sends on its tx line are
// decoded the same way and written to stdout. Python (bitspike.sim.board)
// forwards both directions to a pseudo-terminal, so the host driver talks to
// this process exactly as it talks to /dev/ttyUSB0.
//
// Time: while the design only waits for input, the harness sleeps in poll()
// instead of burning cycles. While it waits for the rest of a frame
// ("waiting"), each millisecond of silence advances FAST_FORWARD cycles, so
// the bridge's inter-byte timeout fires after a predictable wall time.
//
// Two clocks: built with -DBITSPIKE_ACC_CLOCK the design has a second clock,
// acc_clk (the accelerator's, a PLL's on a board), and the harness drives it
// with its own period, unrelated to the link clock's: both are integers in
// the same time unit and the harness always advances to the earliest next
// rising edge. Serial timing and the fast-forward count link-clock cycles.
//
// usage: board_sim CLOCKS_PER_BIT FAST_FORWARD_CYCLES_PER_MS [LINK_PERIOD ACC_PERIOD]
// On stdin EOF it prints "cycles N" (link clock; "acc_cycles M" too with two
// clocks) to stderr and exits 0.

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>
#include <vector>

#include "Vbitspike_board.h"
#include "verilated.h"

namespace {

// The bit period is N/D clocks (D = 1: an integer period). Both ends keep ``rem``, the time to the next
// bit boundary in D-ths of a clock, as the bridge's UART does: a clock whose rem is under D is a boundary
// (rem += N - D), any other takes D off, so edges stay within a clock of the ideal ones.
struct Period {
    long n = 16, d = 1;
};

struct Serializer {  // host → design: one 8N1 frame at a time
    Period p;
    std::deque<uint8_t> queue;
    int bit = -1;  // -1 idle, 0 start, 1..8 data, 9 stop
    long rem = 0;
    uint8_t byte = 0;

    bool busy() const { return bit >= 0 || !queue.empty(); }

    int level() {  // line level for this cycle, then advance
        if (bit < 0) {
            if (queue.empty()) return 1;
            byte = queue.front();
            queue.pop_front();
            bit = 0;
            rem = p.n - p.d;
        }
        int out = bit == 0 ? 0 : (bit == 9 ? 1 : (byte >> (bit - 1)) & 1);
        if (rem < p.d) {
            rem += p.n - p.d;
            if (++bit == 10) bit = -1;
        } else {
            rem -= p.d;
        }
        return out;
    }
};

struct Deserializer {  // design → host
    Period p;
    int bit = -1;
    long rem = 0;
    uint8_t byte = 0;

    bool busy() const { return bit >= 0; }

    // returns a byte (0..255) when one completes, else -1
    int sample(int level) {
        if (bit < 0) {
            if (level == 0) {  // start bit edge: sample the first data bit 1.5 bits later
                bit = 0;
                rem = (3 * p.n) / 2 - p.d;
                byte = 0;
            }
            return -1;
        }
        if (rem >= p.d) {
            rem -= p.d;
            return -1;
        }
        rem += p.n - p.d;
        if (bit < 8) {
            byte |= (level & 1) << bit;
            bit++;
            return -1;
        }
        bit = -1;  // stop bit: a low level is a framing error, drop the byte
        return level ? byte : -1;
    }
};

// "16" or "25/3"; false when malformed
bool parse_period(const char* text, Period& p) {
    char* end = nullptr;
    p.n = strtol(text, &end, 10);
    p.d = 1;
    if (*end == '/') p.d = strtol(end + 1, &end, 10);
    return *end == 0 && p.d >= 1 && p.n >= 4 * p.d;
}

bool write_all(int fd, const std::vector<uint8_t>& data) {
    size_t done = 0;
    while (done < data.size()) {
        ssize_t n = write(fd, data.data() + done, data.size() - done);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return false;
        }
        done += size_t(n);
    }
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s CLOCKS_PER_BIT[/DENOMINATOR] FAST_FORWARD_CYCLES_PER_MS\n", argv[0]);
        return 2;
    }
    Period period;
    const bool period_ok = parse_period(argv[1], period);
    const long fast_forward = atol(argv[2]);
    const long link_period = argc > 4 ? atol(argv[3]) : 1;
    const long acc_period = argc > 4 ? atol(argv[4]) : 1;
    if (!period_ok || fast_forward < 1 || link_period < 1 || acc_period < 1) {
        fprintf(stderr, "board_sim: CLOCKS_PER_BIT must be N or N/D >= 4, FAST_FORWARD and the periods >= 1\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);

    VerilatedContext ctx;
    Vbitspike_board top{&ctx};
    Serializer ser{period};
    Deserializer des{period};
    std::vector<uint8_t> out;
    uint64_t cycles = 0;
    uint64_t acc_cycles = 0;
    uint64_t t_link = link_period, t_acc = acc_period;  // time of each clock's next rising edge
    (void)t_acc;

    auto tick = [&]() {  // one link-clock cycle, and the accelerator-clock edges that fall before it
#ifdef BITSPIKE_ACC_CLOCK
        while (t_acc < t_link) {
            top.acc_clk = 0;
            top.eval();
            top.acc_clk = 1;
            top.eval();
            acc_cycles++;
            t_acc += acc_period;
        }
#endif
        t_link += link_period;
        top.rx = ser.level();
        top.clk = 0;
        top.eval();
        top.clk = 1;
        top.eval();
        int b = des.sample(top.tx);
        if (b >= 0) out.push_back(uint8_t(b));
        cycles++;
    };

    top.rx = 1;
    top.rst = 1;
#ifdef BITSPIKE_ACC_CLOCK
    top.acc_rst = 1;
#endif
    for (int i = 0; i < 8; i++) tick();
    top.rst = 0;
#ifdef BITSPIKE_ACC_CLOCK
    top.acc_rst = 0;
#endif

    bool input_open = true;
    uint8_t buf[4096];
    for (;;) {
        // take what the host sent
        bool got = false;
        if (input_open) {
            for (;;) {
                ssize_t n = read(0, buf, sizeof buf);
                if (n > 0) {
                    ser.queue.insert(ser.queue.end(), buf, buf + n);
                    got = true;
                    continue;
                }
                if (n == 0) input_open = false;
                break;  // EAGAIN: nothing more now
            }
        }
        bool active = ser.busy() || des.busy() || !(top.idle || top.waiting);
        if (!active && !input_open) break;  // host gone and nothing left to do
        if (active || got) {
            for (int i = 0; i < 256; i++) tick();
        } else {
            if (!out.empty()) {
                if (!write_all(1, out)) return 0;
                out.clear();
            }
            struct pollfd p = {0, POLLIN, 0};
            int ready = poll(&p, 1, top.waiting ? 1 : 50);
            if (ready == 0 && top.waiting) {
                for (long i = 0; i < fast_forward; i++) tick();
            }
        }
        if (out.size() >= 64 || (!out.empty() && !des.busy() && (top.idle || top.waiting))) {
            if (!write_all(1, out)) return 0;
            out.clear();
        }
    }
    if (!out.empty()) write_all(1, out);
    fprintf(stderr, "cycles %llu\n", (unsigned long long)cycles);
#ifdef BITSPIKE_ACC_CLOCK
    fprintf(stderr, "acc_cycles %llu\n", (unsigned long long)acc_cycles);
#endif
    return 0;
}
