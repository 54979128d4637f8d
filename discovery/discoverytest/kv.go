package discoverytest

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

func (c *Consul) kvHandle(w http.ResponseWriter, r *http.Request, key string) {
	switch r.Method {
	case http.MethodGet:
		c.kvGet(w, r, key)
	case http.MethodPut, http.MethodPost:
		c.kvPut(w, r, key)
	case http.MethodDelete:
		c.kvDelete(w, r, key)
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

func (c *Consul) kvGet(w http.ResponseWriter, r *http.Request, key string) {
	q := r.URL.Query()
	_, recurse := q["recurse"]
	_, keysOnly := q["keys"]
	_, raw := q["raw"]
	if !c.block(r, func() uint64 { return c.kvIndex }) {
		http.Error(w, "blocking query aborted", http.StatusInternalServerError)
		return
	}
	c.mu.Lock()
	index := max(c.kvIndex, 1)
	var pairs []*api.KVPair
	var keys []string
	sep := q.Get("separator")
	for _, k := range c.sortedKeys() {
		if (recurse || keysOnly) && strings.HasPrefix(k, key) || k == key {
			if keysOnly {
				if sep != "" {
					if i := strings.Index(k[len(key):], sep); i >= 0 {
						k = k[:len(key)+i+len(sep)]
						if len(keys) > 0 && keys[len(keys)-1] == k {
							continue
						}
					}
				}
				keys = append(keys, k)
				continue
			}
			p := *c.kv[k]
			pairs = append(pairs, &p)
		}
	}
	c.mu.Unlock()
	w.Header().Set("X-Consul-Index", strconv.FormatUint(index, 10))
	if keysOnly {
		if keys == nil {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		writeJSON(w, index, keys)
		return
	}
	if len(pairs) == 0 {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	if raw {
		_, _ = w.Write(pairs[0].Value)
		return
	}
	writeJSON(w, index, pairs)
}

func (c *Consul) kvPut(w http.ResponseWriter, r *http.Request, key string) {
	if key == "" {
		http.Error(w, "Missing key name", http.StatusBadRequest)
		return
	}
	q := r.URL.Query()
	body, err := io.ReadAll(io.LimitReader(r.Body, 512<<10+1))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if len(body) > 512<<10 {
		http.Error(w, "Value exceeds 524288 byte limit", http.StatusRequestEntityTooLarge)
		return
	}
	flags, _ := strconv.ParseUint(q.Get("flags"), 10, 64)
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := c.kv[key]
	if s := q.Get("cas"); s != "" {
		cas, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			http.Error(w, "Invalid cas index", http.StatusBadRequest)
			return
		}
		if cas == 0 && cur != nil || cas != 0 && (cur == nil || cur.ModifyIndex != cas) {
			writeJSON(w, 0, false)
			return
		}
	}
	acquire, release := q.Get("acquire"), q.Get("release")
	if acquire != "" || release != "" {
		id := acquire + release
		if c.sessions[id] == nil {
			http.Error(w, "invalid session "+strconv.Quote(id), http.StatusInternalServerError)
			return
		}
		held := cur != nil && cur.Session != ""
		if acquire != "" && held && cur.Session != acquire || release != "" && (!held || cur.Session != release) {
			writeJSON(w, 0, false)
			return
		}
	}
	idx := c.bump()
	c.kvIndex = idx
	p := &api.KVPair{Key: key, Value: body, Flags: flags, CreateIndex: idx, ModifyIndex: idx}
	if cur != nil {
		p.CreateIndex, p.LockIndex, p.Session = cur.CreateIndex, cur.LockIndex, cur.Session
	}
	switch {
	case acquire != "":
		if p.Session != acquire {
			p.LockIndex++
		}
		p.Session = acquire
	case release != "":
		p.Session = ""
	}
	c.kv[key] = p
	writeJSON(w, 0, true)
}

func (c *Consul) kvDelete(w http.ResponseWriter, r *http.Request, key string) {
	q := r.URL.Query()
	_, recurse := q["recurse"]
	c.mu.Lock()
	defer c.mu.Unlock()
	if s := q.Get("cas"); s != "" {
		cas, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			http.Error(w, "Invalid cas index", http.StatusBadRequest)
			return
		}
		if cur := c.kv[key]; cur == nil || cur.ModifyIndex != cas {
			writeJSON(w, 0, false)
			return
		}
	}
	changed := false
	for k := range c.kv {
		if k == key || recurse && strings.HasPrefix(k, key) {
			delete(c.kv, k)
			changed = true
		}
	}
	if changed {
		c.kvIndex = c.bump()
	}
	writeJSON(w, 0, true)
}

func (c *Consul) sessionHandle(w http.ResponseWriter, r *http.Request, rest string) {
	op, id, _ := strings.Cut(rest, "/")
	switch {
	case op == "create" && isWrite(r):
		var req struct {
			Name, Behavior, TTL, LockDelay string
		}
		if r.ContentLength != 0 {
			if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil && err != io.EOF {
				http.Error(w, "Request decode failed: "+err.Error(), http.StatusBadRequest)
				return
			}
		}
		var ttl time.Duration
		if req.TTL != "" {
			d, err := time.ParseDuration(req.TTL)
			if err != nil || d < 10*time.Second || d > 24*time.Hour {
				http.Error(w, "Invalid Session TTL "+strconv.Quote(req.TTL)+": must be between 10s and 24h", http.StatusBadRequest)
				return
			}
			ttl = d
		}
		behavior := req.Behavior
		if behavior == "" {
			behavior = api.SessionBehaviorRelease
		}
		if behavior != api.SessionBehaviorRelease && behavior != api.SessionBehaviorDelete {
			http.Error(w, "Invalid Behavior setting "+strconv.Quote(behavior), http.StatusBadRequest)
			return
		}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			http.Error(w, "fake consul closed", http.StatusServiceUnavailable)
			return
		}
		idx := c.bump()
		s := &session{s: api.SessionEntry{
			ID: newUUID(), Name: req.Name, Node: FakeNode, Behavior: behavior, TTL: req.TTL,
			CreateIndex: idx, LockDelay: 15 * time.Second,
		}, ttl: ttl}
		if ttl > 0 {
			sid := s.s.ID
			s.timer = time.AfterFunc(ttl, func() { c.expireSession(sid) })
		} else {
			s.timer = time.AfterFunc(time.Duration(1<<62), func() {}) // never fires; keeps Close simple
		}
		c.sessions[s.s.ID] = s
		c.mu.Unlock()
		writeJSON(w, 0, map[string]string{"ID": s.s.ID})
	case op == "destroy" && isWrite(r):
		c.mu.Lock()
		c.invalidate(id)
		c.mu.Unlock()
		writeJSON(w, 0, true)
	case op == "renew" && isWrite(r):
		c.mu.Lock()
		s := c.sessions[id]
		if s == nil {
			c.mu.Unlock()
			http.Error(w, "Session id '"+id+"' not found", http.StatusNotFound)
			return
		}
		if s.ttl > 0 {
			s.timer.Reset(s.ttl)
		}
		e := s.s
		c.mu.Unlock()
		writeJSON(w, 0, []api.SessionEntry{e})
	case op == "info" && r.Method == http.MethodGet:
		c.mu.Lock()
		out := []api.SessionEntry{}
		if s := c.sessions[id]; s != nil {
			out = append(out, s.s)
		}
		idx := c.index
		c.mu.Unlock()
		writeJSON(w, idx, out)
	case op == "list" && r.Method == http.MethodGet:
		c.mu.Lock()
		out := []api.SessionEntry{}
		for _, s := range c.sessions {
			out = append(out, s.s)
		}
		idx := c.index
		c.mu.Unlock()
		writeJSON(w, idx, out)
	default:
		http.Error(w, "unsupported session operation "+r.Method+" "+op, http.StatusNotFound)
	}
}

func (c *Consul) expireSession(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.invalidate(id)
}

// invalidate destroys a session and releases (or deletes, per its behavior) the keys it holds. c.mu held.
func (c *Consul) invalidate(id string) {
	s := c.sessions[id]
	if s == nil {
		return
	}
	s.timer.Stop()
	delete(c.sessions, id)
	idx := c.bump()
	for k, p := range c.kv {
		if p.Session != id {
			continue
		}
		if s.s.Behavior == api.SessionBehaviorDelete {
			delete(c.kv, k)
			continue
		}
		np := *p
		np.Session, np.ModifyIndex = "", idx
		c.kv[k] = &np
	}
	c.kvIndex = idx
}
