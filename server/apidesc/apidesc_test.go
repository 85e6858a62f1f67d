package apidesc

import (
	"strings"
	"testing"

	_ "google.golang.org/grpc/health/grpc_health_v1" // a service outside the API
	"google.golang.org/protobuf/reflect/protoreflect"
)

func TestDescriptorsCarryComments(t *testing.T) {
	r, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	d, err := r.FindDescriptorByName("calsync.v1.Bookmark")
	if err != nil {
		t.Fatal(err)
	}
	loc := d.ParentFile().SourceLocations().ByDescriptor(d)
	if !strings.Contains(loc.LeadingComments, "Bookmark marks a position") {
		t.Errorf("Bookmark's comment = %q", loc.LeadingComments)
	}
	if _, err := r.FindDescriptorByName(protoreflect.FullName("grpc.health.v1.Health")); err != nil {
		t.Errorf("falls back to the global registry: %v", err)
	}
}
