// Package kitsd connects discovery watchers to go-kit's service discovery (github.com/go-kit/kit/sd).
//
// Start with NewInstancer to feed any discovery.Watcher (a consul.Registry watch, a Static list) to
// go-kit's sd.NewEndpointer and its load balancers; NewWatcher goes the other way, turning a go-kit
// sd.Instancer into a discovery.Watcher for discovery/lb. Both own one goroutine, stopped by Stop or
// Close.
package kitsd
