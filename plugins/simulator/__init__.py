"""Simulated field devices (Modbus TCP, BACnet/IP) in their own processes, for tests, benchmarks and the demo."""
