package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// browser is a headless Chromium driven over the DevTools protocol, with a minimal WebSocket
// client (RFC 6455: masked text frames out; text, continuation, ping and close frames in), so that
// the test needs no module beyond the standard library.
type browser struct {
	cmd  *exec.Cmd
	conn net.Conn
	rd   *bufio.Reader
	mu   sync.Mutex
	id   int
	done chan struct{}
}

// chromiumArgs are the flags the project runs headless Chromium with.
func chromiumArgs(profile string) []string {
	return []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + profile, "--window-size=1280,900", "--remote-debugging-address=127.0.0.1",
		"--remote-debugging-port=0"}
}

// chromiumNames are the names Chromium and Chrome install under, in the order they are tried on PATH.
var chromiumNames = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"}

// chromiumBinary finds the browser: $CHROMIUM if set (a path or a name on PATH), else the first of
// chromiumNames on PATH, as scripts/install-chromium.sh accepts any Chromium on PATH.
func chromiumBinary(getenv func(string) string, lookPath func(string) (string, error)) (string, error) {
	if v := getenv("CHROMIUM"); v != "" {
		p, err := lookPath(v)
		if err != nil {
			return "", fmt.Errorf("CHROMIUM=%q: %w", v, err)
		}
		return p, nil
	}
	for _, name := range chromiumNames {
		if p, err := lookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("headless Chromium is needed: none of %v is on PATH and CHROMIUM is not set; run scripts/install-chromium.sh", chromiumNames)
}

// openBrowser starts Chromium on pageURL and connects to the page's DevTools endpoint.
func openBrowser(t *testing.T, pageURL string) *browser {
	t.Helper()
	bin, err := chromiumBinary(os.Getenv, exec.LookPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append(chromiumArgs(t.TempDir()), pageURL)...)
	detach(cmd)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b := &browser{cmd: cmd, done: make(chan struct{})}
	wsCh := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`DevTools listening on (ws://\S+)`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case wsCh <- m[1]:
				default:
				}
			}
		}
		_ = cmd.Wait()
		close(b.done)
	}()
	t.Cleanup(b.close)
	var browserWS string
	select {
	case browserWS = <-wsCh:
	case <-b.done:
		t.Fatal("chromium exited before opening DevTools")
	case <-time.After(30 * time.Second):
		t.Fatal("chromium did not open DevTools within 30s")
	}
	u, err := url.Parse(browserWS)
	if err != nil {
		t.Fatal(err)
	}
	// The page target's own endpoint, from the DevTools HTTP list.
	var pageWS string
	deadline := time.Now().Add(20 * time.Second)
	for pageWS == "" && time.Now().Before(deadline) {
		res, err := http.Get("http://" + u.Host + "/json/list")
		if err == nil {
			var targets []struct{ Type, URL, WebSocketDebuggerURL string }
			_ = json.NewDecoder(res.Body).Decode(&targets)
			_ = res.Body.Close()
			for _, tg := range targets {
				if tg.Type == "page" && strings.HasPrefix(tg.URL, pageURL) {
					pageWS = tg.WebSocketDebuggerURL
				}
			}
		}
		if pageWS == "" {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if pageWS == "" {
		t.Fatal("no DevTools page target for " + pageURL)
	}
	if err := b.dial(pageWS); err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *browser) close() {
	if b.conn != nil {
		_ = b.conn.Close()
	}
	if b.cmd.Process != nil {
		_ = b.cmd.Process.Kill()
		<-b.done
	}
}

func (b *browser) dial(wsURL string) error {
	u, err := url.Parse(wsURL)
	if err != nil {
		return err
	}
	conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		return err
	}
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
		u.RequestURI(), u.Host, base64.StdEncoding.EncodeToString(key))
	rd := bufio.NewReaderSize(conn, 1<<20)
	res, err := http.ReadResponse(rd, nil)
	if err != nil {
		_ = conn.Close()
		return err
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		_ = conn.Close()
		return fmt.Errorf("websocket upgrade: %s", res.Status)
	}
	b.conn, b.rd = conn, rd
	return nil
}

func (b *browser) writeText(p []byte) error {
	hdr := []byte{0x81} // FIN, text
	switch n := len(p); {
	case n < 126:
		hdr = append(hdr, 0x80|byte(n))
	case n < 1<<16:
		hdr = append(hdr, 0x80|126, byte(n>>8), byte(n))
	default:
		hdr = binary.BigEndian.AppendUint64(append(hdr, 0x80|127), uint64(n))
	}
	mask := make([]byte, 4)
	_, _ = rand.Read(mask)
	hdr = append(hdr, mask...)
	masked := make([]byte, len(p))
	for i := range p {
		masked[i] = p[i] ^ mask[i%4]
	}
	_, err := b.conn.Write(append(hdr, masked...))
	return err
}

// readMessage returns the next text message.
func (b *browser) readMessage() ([]byte, error) {
	var msg []byte
	for {
		var h [2]byte
		if _, err := io.ReadFull(b.rd, h[:]); err != nil {
			return nil, err
		}
		fin, op := h[0]&0x80 != 0, h[0]&0x0f
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			var e [2]byte
			if _, err := io.ReadFull(b.rd, e[:]); err != nil {
				return nil, err
			}
			n = uint64(binary.BigEndian.Uint16(e[:]))
		case 127:
			var e [8]byte
			if _, err := io.ReadFull(b.rd, e[:]); err != nil {
				return nil, err
			}
			n = binary.BigEndian.Uint64(e[:])
		}
		if n > 64<<20 {
			return nil, errors.New("websocket frame too large")
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(b.rd, payload); err != nil {
			return nil, err
		}
		switch op {
		case 0x8:
			return nil, io.EOF
		case 0x9, 0xA: // ping, pong: DevTools does not ping; ignore
			continue
		}
		msg = append(msg, payload...)
		if fin {
			return msg, nil
		}
	}
}

// call sends a DevTools command and waits for its result, skipping events.
func (b *browser) call(method string, params any, result any) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.id++
	id := b.id
	req, err := json.Marshal(map[string]any{"id": id, "method": method, "params": params})
	if err != nil {
		return err
	}
	_ = b.conn.SetDeadline(time.Now().Add(30 * time.Second))
	if err := b.writeText(req); err != nil {
		return err
	}
	for {
		m, err := b.readMessage()
		if err != nil {
			return fmt.Errorf("%s: %w", method, err)
		}
		var res struct {
			ID     int             `json:"id"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(m, &res); err != nil {
			return err
		}
		if res.ID != id {
			continue
		}
		if res.Error != nil {
			return fmt.Errorf("%s: %s", method, res.Error.Message)
		}
		if result != nil {
			return json.Unmarshal(res.Result, result)
		}
		return nil
	}
}

// eval evaluates a JavaScript expression in the page and decodes its (JSON-able) value into out.
func (b *browser) eval(expr string, out any) error {
	var res struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	if err := b.call("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true}, &res); err != nil {
		return err
	}
	if res.ExceptionDetails != nil {
		return fmt.Errorf("javascript: %s", res.ExceptionDetails.Text)
	}
	if out == nil || len(res.Result.Value) == 0 {
		return nil
	}
	return json.Unmarshal(res.Result.Value, out)
}

// waitFor evaluates a boolean expression until it is true or the timeout passes.
func (b *browser) waitFor(ctx context.Context, expr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var ok bool
		err := b.eval(expr, &ok)
		if err == nil && ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still false after %s: %s (last error: %v)", timeout, expr, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// screenshot captures the page as PNG.
func (b *browser) screenshot() ([]byte, error) {
	var res struct {
		Data string `json:"data"`
	}
	if err := b.call("Page.captureScreenshot", map[string]any{"format": "png"}, &res); err != nil {
		return nil, err
	}
	return base64.StdEncoding.DecodeString(res.Data)
}
