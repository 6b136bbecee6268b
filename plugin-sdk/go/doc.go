// Package baton writes baton plugins in Go: implement [Plugin] and call [Serve].
//
// The SDK does the launch handshake, serves gRPC health, refuses every call without
// the launch token (application services registered with [WithServices] included),
// chunks and verifies state for Snapshot and Restore, and exits cleanly on Shutdown or
// SIGTERM. Logs go to stderr through log/slog, which the host captures; stdout carries
// the handshake line only. [ConnectHost] calls back into the host: its log, a
// key-value store that outlives the plugin's processes, and its event stream.
//
//	type hello struct{ baton.Stateless }
//
//	func (hello) Describe() baton.Description {
//		return baton.Description{Name: "hello", Version: "0.1.0",
//			Methods: []baton.Method{{Name: "hi", Description: "says hello"}}}
//	}
//
//	func (hello) Invoke(_ context.Context, method string, _ []byte) ([]byte, error) {
//		if method == "hi" {
//			return []byte("hello"), nil
//		}
//		return nil, status.Errorf(codes.Unimplemented, "no method %q", method)
//	}
//
//	func main() { baton.Serve(hello{}) }
package baton
