"""cocotb benches (run through :func:`bitspike.sim.cocotb_util.run_cocotb`, never Makefiles)."""
