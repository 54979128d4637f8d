// Package lifecycle runs a process' components in order and stops them in reverse.
//
// Start with Group: Append hooks in dependency order, then Run. Run starts each hook in order under
// one start deadline; when a start fails, the hooks already started are stopped in reverse order (fx
// #1035 shows what happens when they are not). Run then waits until its context is done, a signal
// arrives (WithSignals), or a component reports a fatal error with Fail; it then stops every started
// hook in reverse order under one total stop deadline and returns the first error with the others
// joined. With WithSignals a second signal calls the force-exit function at once.
//
// A Group runs once. Its methods are safe for concurrent use.
package lifecycle
