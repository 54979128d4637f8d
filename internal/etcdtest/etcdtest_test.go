package etcdtest

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// put writes key=value through the member's HTTP gateway.
func put(m *Member, key, value string) error {
	body, _ := json.Marshal(map[string]string{
		"key": base64.StdEncoding.EncodeToString([]byte(key)), "value": base64.StdEncoding.EncodeToString([]byte(value))})
	resp, err := m.http.Post(m.ClientURL+"/v3/kv/put", "application/json", strings.NewReader(string(body)))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &statusError{resp.Status}
	}
	return nil
}

type statusError struct{ s string }

func (e *statusError) Error() string { return e.s }

func TestSingleMember(t *testing.T) {
	m := Start(t)
	if err := put(m, "a", "1"); err != nil {
		t.Fatal(err)
	}
	st, err := m.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Leader != st.MemberID || st.Revision < 2 {
		t.Fatalf("status %+v: want itself as leader and a revision after one put", st)
	}
	m.Kill()
	if m.Running() || m.Healthy() == nil {
		t.Fatal("a killed member still runs")
	}
	m.Restart()
	m.WaitReady(ReadyTimeout)
	if st2, err := m.Status(); err != nil || st2.Revision != st.Revision {
		t.Fatalf("after restart: %+v, %v; want the data kept (revision %d)", st2, err, st.Revision)
	}
}

func TestClusterLeaderLossAndIsolation(t *testing.T) {
	c := StartPartitionableCluster(t, 3)
	old := c.Leader()
	old.Kill()
	var rest []*Member
	for _, m := range c.Members {
		if m != old {
			rest = append(rest, m)
		}
	}
	nl := c.WaitLeaderAmong(ClusterReadyTimeout, rest...)
	if nl == old {
		t.Fatal("the killed member is still leader")
	}
	old.Restart()
	old.WaitReady(ClusterReadyTimeout)

	// Cut a follower off: it loses its leader and refuses writes; the other two keep one.
	cut := c.Follower()
	heal := c.Isolate(cut)
	deadline := time.Now().Add(30 * time.Second)
	for cut.Healthy() == nil && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if cut.Healthy() == nil {
		t.Fatal("an isolated member still reports healthy after 30 s")
	}
	var majority []*Member
	for _, m := range c.Members {
		if m != cut {
			majority = append(majority, m)
		}
	}
	l := c.WaitLeaderAmong(ClusterReadyTimeout, majority...)
	if err := put(l, "during", "partition"); err != nil {
		t.Fatalf("majority write: %v", err)
	}
	heal()
	cut.WaitReady(ClusterReadyTimeout)
	if err := put(cut, "after", "heal"); err != nil {
		t.Fatalf("write through the healed member: %v", err)
	}
}
