package pxe

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"golang.org/x/time/rate"
)

// An identity in a progress report must be in the stable shape the netboot programs give (sorted lists
// without duplicates, lower-case MACs, bounded sizes); anything else is a 400 naming the field.
func TestProgressIdentityShape(t *testing.T) {
	h, mem := newHTTP(t)
	h.ReportRate = rate.Inf
	const m1 = "52:54:00:00:00:01"
	mem.Assign(m1, "prod-server1", "inst1", nil)
	tok, _, _ := mem.ArmInstall(m1)
	tests := []struct {
		name, identity, message string
	}{
		{"disk serials unsorted", `{"diskSerials":["b","a"]}`, "identity: diskSerials and nicMACs must be sorted and without duplicates"},
		{"NIC MACs twice", `{"nicMACs":["52:54:00:00:00:01","52:54:00:00:00:01"]}`, "identity: diskSerials and nicMACs must be sorted and without duplicates"},
		{"NIC MAC upper case", `{"nicMACs":["52:54:00:00:00:AA"]}`, `identity: NIC MAC "52:54:00:00:00:AA" is not a lower-case aa:bb:cc:dd:ee:ff`},
		{"empty disk serial", `{"diskSerials":[""]}`, `identity: disk serial "" must be 1 to 128 bytes`},
		{"system UUID too long", `{"systemUUID":"` + strings.Repeat("f", 65) + `"}`, "identity: systemUUID must be at most 64 bytes and systemSerial at most 128"},
		{"unknown field", `{"cpu":"x"}`, "progress must be {generation, phase"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest("POST", "/machine/v1/progress?mac="+m1,
				strings.NewReader(`{"generation":1,"phase":"disko","identity":`+tt.identity+`}`))
			req.Header.Set("Authorization", "Bearer "+tok)
			h.ServeHTTP(rec, req)
			var e struct{ Code, Message string }
			json.Unmarshal(rec.Body.Bytes(), &e)
			if rec.Code != http.StatusBadRequest || e.Code != "bad_request" || !strings.Contains(e.Message, tt.message) {
				t.Errorf("%d %+v, want 400 with %q", rec.Code, e, tt.message)
			}
		})
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/machine/v1/progress?mac="+m1, strings.NewReader(
		`{"generation":1,"phase":"disko","identity":{"systemUUID":"u","systemSerial":"s","diskSerials":["a","b"],"nicMACs":["52:54:00:00:00:01"]}}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusNoContent {
		t.Errorf("a well-formed identity: %d %s", rec.Code, rec.Body)
	}
}

// Differs names the first fact that differs, with both values.
func TestIdentityDiffers(t *testing.T) {
	a := Identity{SystemUUID: "u", SystemSerial: "s", DiskSerials: []string{"d1"}, NICMACs: []string{"52:54:00:00:00:01"}}
	tests := []struct {
		name             string
		b                Identity
		fact, this, that string
	}{
		{"same", a, "", "", ""},
		{"serial", Identity{SystemUUID: "u", SystemSerial: "t", DiskSerials: a.DiskSerials, NICMACs: a.NICMACs}, "systemSerial", "s", "t"},
		{"a disk more", Identity{SystemUUID: "u", SystemSerial: "s", DiskSerials: []string{"d1", "d2"}, NICMACs: a.NICMACs}, "diskSerials", "[d1]", "[d1 d2]"},
		{"no NICs", Identity{SystemUUID: "u", SystemSerial: "s", DiskSerials: a.DiskSerials}, "nicMACs", "[52:54:00:00:00:01]", "[]"},
	}
	for _, tt := range tests {
		if f, x, y := a.Differs(tt.b); f != tt.fact || x != tt.this || y != tt.that {
			t.Errorf("%s: %q %q %q, want %q %q %q", tt.name, f, x, y, tt.fact, tt.this, tt.that)
		}
	}
}
