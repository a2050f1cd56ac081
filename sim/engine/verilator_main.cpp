// The C++ main of every Verilator model that Lockstep runs under cocotb (sim/engine/runner.py builds it in
// place of the main that comes with cocotb).
//
// What it adds: with "+lockstep_clock_ns=<period>" on the command line, the model's clock input
// `clk` is toggled here, as a plain assignment before the time slot of each edge is evaluated,
// starting high at time 0 (as cocotb's Clock with start_high). Each edge then costs one evaluation
// of the model, where a clock written through VPI by cocotb's GPI clock costs a timer callback, an
// inertial write and a second evaluation per edge. Python only waits on edges, signals and timers,
// so a free-running design is simulated at nearly the speed of the bare model
// (scripts/bench_verilator_limit.py measures both). Without the plusarg nothing is toggled here and
// time only advances to the next VPI timer callback or timing event.
//
// Each time slot runs the regions a VPI application expects, in this order: cbNextSimTime and
// timer callbacks (cbAfterDelay) at the start of the slot, then the clock edge if the slot has one,
// evaluation with value-change callbacks and pending VPI writes until nothing changes, read-write
// synch callbacks (again until nothing changes), then read-only synch callbacks. A slot in which
// nothing but the clock happens is cut short (see the loop in main).

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "Vtop.h"
#include "verilated.h"
#include "verilated_vpi.h"

#if VM_TRACE
#if VM_TRACE_FST
#include "verilated_fst_c.h"
using Tracer = VerilatedFstC;
static const char* const kDefaultTrace = "dump.fst";
#else
#include "verilated_vcd_c.h"
using Tracer = VerilatedVcdC;
static const char* const kDefaultTrace = "dump.vcd";
#endif
static Tracer* tracer = nullptr;
// The window of simulation time that is dumped, [dump_from, dump_until): all of it unless the
// host flow narrows it (a waveform of chosen decode steps or cycles). The flow runs in this
// process (cocotb embeds Python) and calls lockstep_dump_window through ctypes.
static uint64_t dump_from = 0;
static uint64_t dump_until = UINT64_MAX;
extern "C" void lockstep_dump_window(uint64_t from, uint64_t until) {
    dump_from = from;
    dump_until = until;
}
#endif

extern "C" void vlog_startup_routines_bootstrap(void);

namespace {

constexpr uint64_t kNever = ~0ULL;

// Value-change callbacks may write signals, which may change other watched signals: repeat until
// a pass calls nothing. Returns whether any callback ran.
bool value_callbacks() {
    bool called = false;
    while (VerilatedVpi::callValueCbs()) called = true;
    return called;
}

// Evaluate the current time slot until neither the model nor any VPI application changes anything.
void settle_slot(Vtop* top) {
    do {
        do {
            top->eval_step();
            VerilatedVpi::clearEvalNeeded();
            VerilatedVpi::doInertialPuts();
            value_callbacks();
        } while (VerilatedVpi::evalNeeded());
        VerilatedVpi::callCbs(cbReadWriteSynch);
        VerilatedVpi::doInertialPuts();
        value_callbacks();
    } while (VerilatedVpi::evalNeeded());
    top->eval_end_step();
}

bool ended = false;

void end_of_simulation() {
    if (ended) return;
    ended = true;
    VerilatedVpi::callCbs(cbEndOfSimulation);
#if VM_TRACE
    if (tracer) tracer->close();
#endif
}

// Half the clock period in the model's time precision, from "+lockstep_clock_ns=<n>"; 0 without it.
uint64_t half_period(int argc, char** argv) {
    static const char prefix[] = "+lockstep_clock_ns=";
    for (int i = 1; i < argc; ++i) {
        if (std::strncmp(argv[i], prefix, sizeof prefix - 1) != 0) continue;
        char* end = nullptr;
        const unsigned long long ns = std::strtoull(argv[i] + sizeof prefix - 1, &end, 10);
        const int exponent = -9 - Verilated::threadContextp()->timeprecision();  // steps per ns: 10^exponent
        uint64_t steps = ns;
        for (int e = 0; e < exponent; ++e) steps *= 10;
        if (*end != '\0' || ns == 0 || exponent < 0 || steps % 2) {
            std::fprintf(stderr, "lockstep: error: bad clock period %s (whole ns, even in time steps)\n", argv[i]);
            std::exit(2);
        }
        return steps / 2;
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    Verilated::commandArgs(argc, argv);
    VerilatedContext* const context = Verilated::threadContextp();
    const std::unique_ptr<Vtop> top{new Vtop{""}};
    Verilated::fatalOnVpiError(false);  // cocotb registers system tasks Verilator does not know
    const uint64_t half = half_period(argc, argv);

#if VM_TRACE
    const char* trace_file = kDefaultTrace;
    bool trace = false;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--trace") == 0) trace = true;
        if (std::strcmp(argv[i], "--trace-file") == 0 && i + 1 < argc) trace_file = argv[++i];
    }
    if (trace) {
        Verilated::traceEverOn(true);
        tracer = new Tracer;
        top->trace(tracer, 99);
        tracer->open(trace_file);
    }
#endif

    vlog_startup_routines_bootstrap();
    Verilated::addExitCb([](void*) { end_of_simulation(); }, nullptr);
    VerilatedVpi::callCbs(cbStartOfSimulation);
    value_callbacks();

    uint64_t next_edge = kNever;
    if (half) {
        top->clk = 1;
        next_edge = half;
    }
    bool tracing = false;
#if VM_TRACE
    tracing = tracer != nullptr;
#endif
    bool more = true;
    while (more && !Verilated::gotFinish()) {
        settle_slot(top.get());
        VerilatedVpi::callCbs(cbReadOnlySynch);
#if VM_TRACE
        if (tracer && context->time() >= dump_from && context->time() < dump_until) tracer->dump(context->time());
#endif
        // Move on in time. A slot that is only a clock edge, where no VPI callback is due or waits
        // on a synch region, is evaluated once and its value-change callbacks checked once (the
        // free run of a design while Python waits for a signal); any other slot, or an edge that
        // wakes a callback, goes through the whole sequence above (evaluating the model again
        // there changes nothing).
        while (!Verilated::gotFinish()) {
            uint64_t next = VerilatedVpi::cbNextDeadline();
            if (top->eventsPending() && top->nextTimeSlot() < next) next = top->nextTimeSlot();
            if (next_edge < next) next = next_edge;
            if (next == kNever) {  // nothing will ever happen again
                more = false;
                break;
            }
            context->time(next);
            bool called = VerilatedVpi::callCbs(cbNextSimTime);
            if (called) value_callbacks();
            if (VerilatedVpi::callCbs(cbAfterDelay)) {  // timer callbacks, at the start of the slot
                called = true;
                value_callbacks();
            }
            const bool edge = next == next_edge;
            if (edge) {  // the clock changes before the slot is evaluated, as an immediate write would
                top->clk = !top->clk;
                next_edge += half;
            }
            if (called || !edge || tracing || VerilatedVpi::hasCbs(cbReadWriteSynch)
                || VerilatedVpi::hasCbs(cbReadOnlySynch)) {
                break;
            }
            top->eval_step();
            VerilatedVpi::clearEvalNeeded();
            if (VerilatedVpi::callValueCbs()) break;
            top->eval_end_step();
        }
    }

    top->final();
    end_of_simulation();
#if VM_TRACE
    delete tracer;
    tracer = nullptr;
#endif
    return context->errorCount() > 0 ? 1 : 0;
}
