# PKCS#11 KEK and publisher throughput (branch pkcs11-kek). The KEK tests
# need SoftHSM2 (test-deps-keys installs it; TEST_ENV requires it).

# `make bench-publisher-crypto` also publishes and downloads 1 GiB over
# mTLS gRPC (bench-publisher), printing MB/s next to the machine's limit,
# user+sys CPU per GiB, and the 70 % target.
bench-publisher-crypto: bench-publisher
