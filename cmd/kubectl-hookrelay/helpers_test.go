package main

import "k8s.io/apimachinery/pkg/runtime/schema"

var schemaServices = schema.GroupResource{Resource: "services"}

type errString string

func (e errString) Error() string { return string(e) }
