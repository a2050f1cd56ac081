"""FPGA builds: synthesis, place and route and programming of a board."""
