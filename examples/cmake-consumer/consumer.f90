! ALLOCATE goes through malloc, which is domalloc's; domalloc_node_of (include/domalloc.h) says so.
program consumer_fortran
  use iso_c_binding
  implicit none
  interface
    integer(c_int) function domalloc_node_of(p) bind(c, name="domalloc_node_of")
      import :: c_int, c_ptr
      type(c_ptr), value :: p
    end function
    integer(c_int) function domalloc_node_count() bind(c, name="domalloc_node_count")
      import :: c_int
    end function
  end interface
  real(c_double), allocatable, target :: a(:)
  allocate(a(1000000))
  a = 1.0d0
  if (domalloc_node_of(c_loc(a)) < 0) then
    print *, "ALLOCATE did not use domalloc"
    error stop 1
  end if
  print '(a, i0, a, f0.1)', "fortran: ", domalloc_node_count(), " node(s), sum ", sum(a)
  deallocate(a)
end program
