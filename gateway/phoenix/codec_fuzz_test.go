package phoenix

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"unicode/utf8"
)

// appendClientPush encodes f in the client→server binary layout (kind 0,
// 5-byte header) — the inverse of decodeBinary, used to round-trip frames.
func appendClientPush(dst []byte, f Frame) []byte {
	dst = append(dst, 0, byte(len(f.JoinRef.S)), byte(len(f.Ref.S)), byte(len(f.Topic)), byte(len(f.Event)))
	dst = append(dst, f.JoinRef.S...)
	dst = append(dst, f.Ref.S...)
	dst = append(dst, f.Topic...)
	dst = append(dst, f.Event...)
	return append(dst, f.Payload...)
}

func FuzzDecode(f *testing.F) {
	for _, tc := range decodeCases {
		f.Add([]byte(tc.data), byte(tc.v), tc.binary)
	}
	f.Fuzz(func(t *testing.T, data []byte, version byte, binary bool) {
		// Odd bytes select V1 and even V2, so no input is wasted on the
		// (separately tested) invalid-version path.
		v := V2
		if version&1 == 1 {
			v = V1
		}
		textOK := utf8.Valid(data) && json.Valid(data)
		if got := validJSON(data); got != json.Valid(data) {
			t.Fatalf("validJSON = %v, json.Valid = %v for %q", got, !got, data)
		}

		fr, err := Decode(v, binary, data)
		if err != nil {
			var pe *ProtocolError
			var be *BadRequestError
			switch {
			case errors.As(err, &pe):
				want := CloseInvalidPayload
				if v == V1 && binary {
					want = CloseUnsupportedData
				}
				if pe.Code != want {
					t.Fatalf("code %d, want %d: %v", pe.Code, want, err)
				}
			case errors.As(err, &be):
				if binary || !textOK {
					t.Fatalf("bad request for binary or invalid JSON input %q: %v", data, err)
				}
			default:
				t.Fatalf("unexpected error type %T: %v", err, err)
			}
			return
		}

		if binary {
			if !fr.Binary || v != V2 {
				t.Fatalf("binary decode gave %+v on v%d", fr, v)
			}
			again, err := Decode(V2, true, appendClientPush(nil, fr))
			if err != nil {
				t.Fatalf("re-decode binary: %v", err)
			}
			if !reflect.DeepEqual(again, fr) {
				t.Fatalf("binary round trip:\n got  %+v\n want %+v", again, fr)
			}
			return
		}

		if !textOK || fr.Binary || !json.Valid(fr.Payload) {
			t.Fatalf("accepted invalid text %q as %+v", data, fr)
		}
		for _, s := range []string{fr.JoinRef.S, fr.Ref.S, fr.Topic, fr.Event} {
			if !utf8.ValidString(s) {
				t.Fatalf("decoded string %q is not UTF-8", s)
			}
		}
		// v2 carries every field, so re-encoding must reproduce the frame.
		again, err := Decode(V2, false, AppendMessage(nil, V2, fr.JoinRef, fr.Ref, fr.Topic, fr.Event, fr.Payload))
		if err != nil {
			t.Fatalf("re-decode v2: %v", err)
		}
		if !reflect.DeepEqual(again, fr) {
			t.Fatalf("v2 round trip:\n got  %+v\n want %+v", again, fr)
		}
		// v1 output has no join_ref; only a join falls back to its ref.
		again, err = Decode(V1, false, AppendMessage(nil, V1, fr.JoinRef, fr.Ref, fr.Topic, fr.Event, fr.Payload))
		if err != nil {
			t.Fatalf("re-decode v1: %v", err)
		}
		want := fr
		want.JoinRef = Null
		if fr.Event == EventJoin {
			want.JoinRef = fr.Ref
		}
		if !reflect.DeepEqual(again, want) {
			t.Fatalf("v1 round trip:\n got  %+v\n want %+v", again, want)
		}
	})
}
