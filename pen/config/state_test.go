package config

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestStateCommand: state answers one JSON object with the configuration
// as write saves it and the status hook's value; it takes no argument and
// changes nothing.
func TestStateCommand(t *testing.T) {
	in := New(Default(), Process{ConfigFile: "/perm/pen/services/web/pen.cfg"}, nil)
	if _, err := in.Exec("listen 127.0.0.1:8080", FromControl); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Exec("server 0 address 127.0.0.1 port 81", FromControl); err != nil {
		t.Fatal(err)
	}
	in.SetStatus(func(c *Config) any { return map[string]int{"servers": len(c.Servers)} })
	before := in.Changes()
	out, err := in.Exec("state", FromControl)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		State
		Runtime map[string]int `json:"runtime"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("state: %v: %q", err, out)
	}
	if st.Listen != "127.0.0.1:8080" || st.ConfigFile != "/perm/pen/services/web/pen.cfg" || st.Runtime["servers"] != 1 ||
		!strings.Contains(st.Config, "server 0 acl 0 address 127.0.0.1 port 81") || st.Changes[FromControl] != 2 {
		t.Errorf("state = %+v", st)
	}
	if in.Changes() != before {
		t.Errorf("state counted as a change")
	}
	if _, err := in.Exec("state 1", FromControl); err == nil {
		t.Error("state 1 accepted")
	}
	// The admin UI may ask too: state names no file.
	if _, err := in.Exec("state", FromWeb); err != nil {
		t.Errorf("state from the admin UI: %v", err)
	}
}
