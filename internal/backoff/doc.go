// Package backoff computes retry delays: capped exponential backoff with full jitter.
//
// Start with Policy; its zero value is usable. The package only computes durations, so callers keep
// control of waiting (a timer in a select with their context), which makes it easy to test under
// testing/synctest.
package backoff
