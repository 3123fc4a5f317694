"""The network compiler: manifest → plan → Amaranth top → Verilog and reports."""
