// Package apidesc carries the calsync API's descriptors with their
// comments, so gRPC reflection (grpcurl describe) shows the documentation
// of every message and field. Generated Go code drops comments; this file
// set is built from proto/ by `make generate` (buf build) and checked for
// staleness by `make check`.
package apidesc

import (
	_ "embed"
	"fmt"
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

//go:embed calsync.binpb
var fileSet []byte

// Resolver finds descriptors in the documented calsync files first, and in
// the program's registry (health, reflection, ...) after that.
type Resolver struct {
	files *protoregistry.Files
}

var load = sync.OnceValues(func() (*Resolver, error) {
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(fileSet, &set); err != nil {
		return nil, fmt.Errorf("apidesc: %w", err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		return nil, fmt.Errorf("apidesc: %w", err)
	}
	return &Resolver{files: files}, nil
})

// Load returns the resolver, parsing the embedded file set once.
func Load() (*Resolver, error) { return load() }

// FindFileByPath implements protodesc.Resolver.
func (r *Resolver) FindFileByPath(path string) (protoreflect.FileDescriptor, error) {
	if fd, err := r.files.FindFileByPath(path); err == nil {
		return fd, nil
	}
	return protoregistry.GlobalFiles.FindFileByPath(path)
}

// FindDescriptorByName implements protodesc.Resolver.
func (r *Resolver) FindDescriptorByName(name protoreflect.FullName) (protoreflect.Descriptor, error) {
	if d, err := r.files.FindDescriptorByName(name); err == nil {
		return d, nil
	}
	return protoregistry.GlobalFiles.FindDescriptorByName(name)
}
