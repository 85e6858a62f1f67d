package zone

import "testing"

func TestLoad(t *testing.T) {
	for _, name := range []string{"Europe/Paris", "America/Los_Angeles", "UTC"} {
		loc, err := Load(name)
		if err != nil || loc.String() != name {
			t.Errorf("Load(%q) = %v, %v", name, loc, err)
		}
		again, _ := Load(name)
		if again != loc {
			t.Errorf("Load(%q) twice gave two locations", name)
		}
	}
	for _, name := range []string{"", "Local", "Mars/Olympus_Mons", "../../etc/passwd"} {
		if _, err := Load(name); err == nil {
			t.Errorf("Load(%q) succeeded", name)
		}
	}
}

func BenchmarkLoad(b *testing.B) {
	for b.Loop() {
		if _, err := Load("Europe/Paris"); err != nil {
			b.Fatal(err)
		}
	}
}
