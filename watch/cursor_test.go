package watch

import (
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/calsync/calsync/store"
)

func TestCursorCodec(t *testing.T) {
	c := NewCursorCodec("store-a")
	t.Run("OK", func(t *testing.T) {
		for _, pos := range []store.Cursor{0, 1, 42, 1 << 40, ^store.Cursor(0)} {
			got, err := c.Decode(c.Encode(pos))
			if err != nil || got != pos {
				t.Errorf("Decode(Encode(%d)) = %d, %v", pos, got, err)
			}
		}
	})
	t.Run("ErrMalformed", func(t *testing.T) {
		good := c.Encode(7)
		flipped := []byte(good)
		flipped[len(flipped)-3] ^= 1
		for _, s := range []string{"x", "7", good + "A", good[:len(good)-1], string(flipped), "!!!!!!!!!!!!!!!!!!!!!!!!!!!!"} {
			_, err := c.Decode(s)
			if status.Code(err) != codes.InvalidArgument || Reason(err) != ReasonCursorMalformed {
				t.Errorf("Decode(%q) = %v, want INVALID_ARGUMENT %s", s, err, ReasonCursorMalformed)
			}
		}
	})
	t.Run("ErrForeign", func(t *testing.T) {
		_, err := c.Decode(NewCursorCodec("store-b").Encode(7))
		var we *Error
		if !errors.As(err, &we) || we.Code != codes.InvalidArgument || we.Reason != ReasonCursorForeign {
			t.Errorf("Decode(foreign) = %v, want INVALID_ARGUMENT %s", err, ReasonCursorForeign)
		}
	})
}

func FuzzCursorDecode(f *testing.F) {
	c := NewCursorCodec("store-a")
	f.Add(c.Encode(1))
	f.Add("")
	f.Add("AAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Fuzz(func(t *testing.T, s string) {
		pos, err := c.Decode(s)
		if err != nil {
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("Decode(%q) failed with %v, want INVALID_ARGUMENT", s, err)
			}
			return
		}
		if c.Encode(pos) != s {
			t.Fatalf("Decode(%q) = %d, which encodes differently", s, pos)
		}
	})
}
