"""The StarSSE paper (NeurIPS 2023) reproduced with the library: its sweep, claims and figures."""
