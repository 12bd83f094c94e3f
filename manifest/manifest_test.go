package manifest

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

func validManifest() *Manifest {
	sum := strings.Repeat("ab", 32)
	return &Manifest{
		FormatVersion: FormatVersion,
		KdrVersion:    "test",
		ID:            NewID(time.Date(2026, 11, 24, 20, 0, 0, 0, time.UTC), [3]byte{1, 2, 3}),
		Cluster:       "prod",
		Created:       time.Date(2026, 11, 24, 20, 0, 0, 0, time.UTC),
		Etcd:          Etcd{ClusterID: "abc", Revision: 42, HashKV: 7, DBSize: 1 << 20},
		Objects: []Object{
			{Name: EtcdObject, Kind: KindEtcdSnapshot, PlainSize: 10, PlainSHA256: sum, Size: 20, SHA256: sum},
			{Name: StateObject, Kind: KindState, PlainSize: 10, PlainSHA256: sum, Size: 20, SHA256: sum},
		},
		Previous: &Link{ID: "20261124T190000.000Z-000000", SHA256: sum},
	}
}

func TestParseRoundTrip(t *testing.T) {
	m := validManifest()
	data, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	again, _ := got.Marshal()
	if !bytes.Equal(data, again) {
		t.Errorf("round trip changed the manifest:\n%s\n%s", data, again)
	}
	if o, ok := got.Object(EtcdObject); !ok || o.Size != 20 {
		t.Errorf("Object(%s) = %+v, %v", EtcdObject, o, ok)
	}
}

func TestParseRejects(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	tests := []struct {
		name    string
		edit    func(*Manifest)
		raw     string
		wantErr error
		wantMsg string
	}{
		{name: "newer format", edit: func(m *Manifest) { m.FormatVersion = FormatVersion + 1 }, wantErr: ErrNewerFormat},
		{name: "bad id", edit: func(m *Manifest) { m.ID = "../../etc" }, wantErr: ErrInvalid, wantMsg: "id"},
		{name: "bad cluster", edit: func(m *Manifest) { m.Cluster = "Prod/x" }, wantErr: ErrInvalid, wantMsg: "cluster"},
		{name: "no etcd object", edit: func(m *Manifest) { m.Objects = m.Objects[1:] }, wantErr: ErrInvalid, wantMsg: "no etcd"},
		{name: "unknown object", edit: func(m *Manifest) { m.Objects[1].Name = "x" }, wantErr: ErrInvalid, wantMsg: "unknown object"},
		{name: "duplicate object", edit: func(m *Manifest) { m.Objects[1] = m.Objects[0] }, wantErr: ErrInvalid, wantMsg: "twice"},
		{name: "short hash", edit: func(m *Manifest) { m.Objects[0].SHA256 = "abc" }, wantErr: ErrInvalid, wantMsg: "sha256"},
		{name: "negative size", edit: func(m *Manifest) { m.Objects[0].Size = -1 }, wantErr: ErrInvalid, wantMsg: "negative"},
		{name: "bad previous", edit: func(m *Manifest) { m.Previous = &Link{ID: "x", SHA256: sum} }, wantErr: ErrInvalid, wantMsg: "previous"},
		{name: "no created", edit: func(m *Manifest) { m.Created = time.Time{} }, wantErr: ErrInvalid, wantMsg: "created"},
		{name: "not json", raw: "{", wantErr: ErrInvalid},
		{name: "unknown field", raw: `{"formatVersion":1,"surprise":true}`, wantErr: ErrInvalid, wantMsg: "surprise"},
		{name: "trailing data", raw: "", wantErr: ErrInvalid, wantMsg: "after top-level value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := []byte(tt.raw)
			if tt.edit != nil || tt.name == "trailing data" {
				m := validManifest()
				if tt.edit != nil {
					tt.edit(m)
				}
				data, _ = m.Marshal()
				if tt.name == "trailing data" {
					data = append(data, []byte("{}")...)
				}
			}
			_, err := Parse(bytes.NewReader(data))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("err = %q, want it to mention %q", err, tt.wantMsg)
			}
		})
	}
}

func TestKeys(t *testing.T) {
	id := NewID(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), [3]byte{0xaa, 0xbb, 0xcc})
	if id != "20260102T030405.000Z-aabbcc" {
		t.Fatalf("NewID = %q", id)
	}
	when, err := IDTime(id)
	if err != nil || !when.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("IDTime = %v, %v", when, err)
	}
	c, gotID, obj, ok := SplitKey(Key("prod", id, EtcdObject))
	if !ok || c != "prod" || gotID != id || obj != EtcdObject {
		t.Errorf("SplitKey round trip = %q %q %q %v", c, gotID, obj, ok)
	}
	for _, k := range []string{"prod/pruned/x.json", "prod", "prod/" + id, "../" + id + "/x", "Prod/" + id + "/x"} {
		if _, _, _, ok := SplitKey(k); ok {
			t.Errorf("SplitKey(%q) accepted a key outside the layout", k)
		}
	}
}

func TestParseIndex(t *testing.T) {
	sum := strings.Repeat("0f", 32)
	good := `{"node":"cp1","entries":[{"path":"etc/kubernetes","set":"pki","type":"dir","size":0,"mode":493,"uid":0,"gid":0,"modTime":"2026-01-01T00:00:00Z"},` +
		`{"path":"etc/kubernetes/pki/ca.crt","set":"pki","type":"file","size":3,"mode":420,"uid":0,"gid":0,"modTime":"2026-01-01T00:00:00Z","sha256":"` + sum + `"}]}`
	if idx, err := ParseIndex(strings.NewReader(good)); err != nil || len(idx.Entries) != 2 {
		t.Fatalf("ParseIndex(good) = %v, %v", idx, err)
	}
	bad := map[string]string{
		"absolute path": strings.Replace(good, `"etc/kubernetes/pki/ca.crt"`, `"/etc/passwd"`, 1),
		"dot dot":       strings.Replace(good, `"etc/kubernetes/pki/ca.crt"`, `"etc/../../x"`, 1),
		"duplicate":     strings.Replace(good, `"etc/kubernetes/pki/ca.crt"`, `"etc/kubernetes"`, 1),
		"bad sha":       strings.Replace(good, sum, "zz", 1),
		"unknown type":  strings.Replace(good, `"type":"dir"`, `"type":"fifo"`, 1),
		"unknown field": strings.Replace(good, `"node":"cp1"`, `"node":"cp1","x":1`, 1),
	}
	for name, in := range bad {
		if _, err := ParseIndex(strings.NewReader(in)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	data, _ := validManifest().Marshal()
	f.Add(data)
	f.Add([]byte(`{"formatVersion":1}`))
	f.Add([]byte(`{"formatVersion":99}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := Parse(bytes.NewReader(in))
		if err != nil {
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("Parse accepted a manifest that does not validate: %v", err)
		}
		out, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Parse(bytes.NewReader(out)); err != nil {
			t.Fatalf("re-parse of a parsed manifest failed: %v", err)
		}
	})
}

func FuzzParseIndex(f *testing.F) {
	f.Add([]byte(`{"node":"cp1","entries":[{"path":"etc/kubernetes/pki/ca.crt","set":"pki","type":"file","size":3,"mode":420,"uid":0,"gid":0,"modTime":"2026-01-01T00:00:00Z","sha256":"` + strings.Repeat("0f", 32) + `"}]}`))
	f.Add([]byte(`{"entries":[]}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		idx, err := ParseIndex(bytes.NewReader(in))
		if err != nil {
			return
		}
		for _, e := range idx.Entries {
			if ValidEntryPath(e.Path) != nil {
				t.Fatalf("ParseIndex accepted unsafe path %q", e.Path)
			}
		}
	})
}
