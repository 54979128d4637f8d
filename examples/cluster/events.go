package main

import (
	"math"
	"sync"
	"time"
)

// Event kinds.
const (
	EventKill     = "kill"
	EventSlow     = "slow"
	EventRolling  = "rolling-restart"
	EventOutage   = "registry-outage"
	EventSpike    = "load-spike"
	EventStart    = "start"
	EventInfo     = "info"
	EventRecovery = "recovered"
)

// Event is one entry of the timeline: a chaos action and how the cluster reacted to it.
type Event struct {
	ID       int       `json:"id"`
	At       time.Time `json:"at"`
	Offset   float64   `json:"offset_s"`        // seconds since the load started; negative for the setup's
	Setup    bool      `json:"setup,omitempty"` // before the load started
	Kind     string    `json:"kind"`
	Target   string    `json:"target,omitempty"`
	Detail   string    `json:"detail"`
	Chaos    bool      `json:"chaos"`
	Duration float64   `json:"duration_s,omitempty"`
	// Reaction, filled in when the event is over.
	Done            bool    `json:"done"`
	Requests        int     `json:"requests,omitempty"`
	Failures        int     `json:"failures,omitempty"`
	RecoverySeconds float64 `json:"recovery_s,omitempty"`
	Reaction        string  `json:"reaction,omitempty"`
}

// timeline is the list of events, shared by the chaos schedule, the terminal and the dashboard.
// It is safe for concurrent use.
type timeline struct {
	start  time.Time
	notify func(Event) // called outside the lock for every new or updated event

	mu     sync.Mutex
	events []*Event
}

// maxEvents bounds the timeline of a demo that runs until Ctrl-C.
const maxEvents = 500

func (t *timeline) add(e Event) *Event {
	t.mu.Lock()
	e.ID = len(t.events) + 1
	if e.At.IsZero() {
		e.At = time.Now()
	}
	// Before the load starts there is no origin yet: begin fills the offset in. (A zero start would
	// saturate the Duration and show 9223372036.9 s.)
	e.Setup = t.start.IsZero()
	if !e.Setup {
		e.Offset = roundTo(e.At.Sub(t.start).Seconds(), 0.1)
	}
	ev := &e
	t.events = append(t.events, ev)
	if len(t.events) > maxEvents {
		t.events = t.events[1:]
	}
	c := *ev
	t.mu.Unlock()
	if t.notify != nil {
		t.notify(c)
	}
	return ev
}

// begin sets the origin of the offsets, the load's start; the setup's events get negative offsets.
func (t *timeline) begin(start time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.start = start
	for _, e := range t.events {
		if e.Setup {
			e.Offset = roundTo(e.At.Sub(start).Seconds(), 0.1)
		}
	}
}

// finish records the reaction of ev.
func (t *timeline) finish(ev *Event, f func(*Event)) {
	t.mu.Lock()
	f(ev)
	ev.Done = true
	c := *ev
	t.mu.Unlock()
	if t.notify != nil {
		t.notify(c)
	}
}

func (t *timeline) list() []Event {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Event, len(t.events))
	for i, e := range t.events {
		out[i] = *e
	}
	return out
}

// roundTo rounds x to a multiple of unit (0.1, 0.01, ...) without binary noise in the JSON.
func roundTo(x, unit float64) float64 {
	n := math.Round(1 / unit)
	return math.Round(x*n) / n
}
