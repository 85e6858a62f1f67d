package ingest

import (
	"google.golang.org/protobuf/proto"

	calsyncv1 "github.com/calsync/calsync/gen/calsync/v1"
)

func unmarshalChange(b []byte, c *calsyncv1.Change) error { return proto.Unmarshal(b, c) }
