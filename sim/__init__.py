"""Verification: cocotb benches, the Verilator co-simulation engine, divergence reports."""
