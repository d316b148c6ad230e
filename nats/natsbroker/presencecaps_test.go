package natsbroker

import (
	"strings"
	"testing"
)

func TestPresenceCapsValidation(t *testing.T) {
	for _, tc := range []struct {
		ns   Namespace
		want string // "" = valid
	}{
		{Namespace{Presence: true, PresenceMaxMembers: 5000, PresenceMaxStateBytes: 64 << 10}, ""},
		{Namespace{PresenceMaxMembers: 10}, "only apply with presence"},
		{Namespace{PresenceMaxStateBytes: 10}, "only apply with presence"},
		{Namespace{Presence: true, PresenceMaxMembers: -1}, "must not be negative"},
	} {
		err := ValidateNamespaces(map[string]Namespace{"room": tc.ns})
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: %v, want %q", tc.ns, err, tc.want)
		}
	}
}
