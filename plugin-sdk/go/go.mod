module baton.invalid/baton

// The lowest Go this SDK and grpc-go need: grpc-go v1.80.0 is the newest release
// that supports Go 1.24, and go-plugin 1.8 declares go 1.24 too, so requiring this SDK
// does not raise a plugin module's go line (a plugin may require newer grpc-go, and so
// newer Go, itself). scripts/test-sdks.sh vets and tests with exactly this toolchain.
go 1.24.0

require (
	golang.org/x/sys v0.41.0
	google.golang.org/grpc v1.80.0
	google.golang.org/protobuf v1.36.12
)

require (
	golang.org/x/net v0.50.0 // indirect
	golang.org/x/text v0.34.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260120221211-b8f7ae30c516 // indirect
)
