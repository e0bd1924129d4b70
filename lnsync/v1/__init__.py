"""Generated gRPC contracts (lnsync.v1). Do not edit: run `make proto`."""
