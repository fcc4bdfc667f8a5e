! Fortran + OpenMP under LD_PRELOAD=libdomalloc.so: allocatable arrays allocated, resized and
! freed inside parallel regions (libgomp's threads), a big array allocated by the main thread
! and first touched in parallel, automatic arrays, and checked results. Exit status 0 = pass.
program omp_arrays
  use omp_lib
  implicit none
  integer, parameter :: dp = kind(1.0d0)
  integer, parameter :: n = 4000000
  real(dp), allocatable :: big(:)
  real(dp) :: total, expect
  integer :: i, errors, nthreads

  errors = 0
  if (.not. preloaded()) then
    print *, 'omp_arrays: libdomalloc is not mapped in this process'
    stop 2
  end if

  ! Main thread allocates, workers first-touch and fill in parallel.
  allocate(big(n))
  !$omp parallel do schedule(static)
  do i = 1, n
    big(i) = real(mod(i, 1000), dp)
  end do
  !$omp end parallel do
  total = 0
  !$omp parallel do reduction(+:total)
  do i = 1, n
    total = total + big(i)
  end do
  !$omp end parallel do
  expect = 0
  do i = 1, n
    expect = expect + real(mod(i, 1000), dp)
  end do
  if (abs(total - expect) > 0.5_dp) errors = errors + 1
  deallocate(big)

  ! Every thread allocates, grows (move_alloc) and frees its own arrays.
  nthreads = 0
  !$omp parallel reduction(+:errors) reduction(max:nthreads)
  nthreads = omp_get_num_threads()
  errors = errors + churn(omp_get_thread_num())
  !$omp end parallel

  ! Allocate in one parallel region, free in another (other threads free them).
  call cross_thread()

  if (errors /= 0) then
    print '(a,i0,a)', 'omp_arrays: ', errors, ' error(s)'
    stop 1
  end if
  print '(a,i0,a)', 'omp_arrays: ok (', nthreads, ' threads)'

contains

  logical function preloaded()
    character(len=512) :: line
    integer :: u, ios
    preloaded = .false.
    open(newunit=u, file='/proc/self/maps', action='read', iostat=ios)
    if (ios /= 0) return
    do
      read(u, '(a)', iostat=ios) line
      if (ios /= 0) exit
      if (index(line, 'libdomalloc') > 0) preloaded = .true.
    end do
    close(u)
  end function

  integer function churn(tid) result(bad)
    integer, intent(in) :: tid
    real(dp), allocatable :: a(:), b(:)
    integer :: k, m, j
    bad = 0
    do k = 1, 300
      m = 1 + mod(k * 7919 + tid * 104729, 20000)
      allocate(a(m))
      do j = 1, m
        a(j) = real(j + tid, dp)
      end do
      ! Grow: copy into a bigger array and move it back.
      allocate(b(2 * m))
      b(1:m) = a
      b(m+1:) = -1
      call move_alloc(b, a)
      if (size(a) /= 2 * m) bad = bad + 1
      if (a(m) /= real(m + tid, dp) .or. a(2 * m) /= -1) bad = bad + 1
      call automatic(m, tid, bad)
      deallocate(a)
    end do
  end function

  subroutine automatic(m, tid, bad)
    integer, intent(in) :: m, tid
    integer, intent(inout) :: bad
    real(dp) :: tmp(m)
    character(len=:), allocatable :: s
    tmp = real(tid, dp)
    if (abs(sum(tmp) - real(m, dp) * real(tid, dp)) > 0.5_dp) bad = bad + 1
    s = repeat('x', mod(m, 300) + 1)
    if (len(s) /= mod(m, 300) + 1) bad = bad + 1
  end subroutine

  subroutine cross_thread()
    type :: holder
      integer, allocatable :: v(:)
    end type
    type(holder), allocatable :: h(:)
    integer :: j, k
    allocate(h(1000))
    !$omp parallel do schedule(static, 1)
    do j = 1, 1000
      allocate(h(j)%v(j * 10))
      h(j)%v = j
    end do
    !$omp end parallel do
    !$omp parallel do schedule(static, 7) reduction(+:errors)
    do j = 1000, 1, -1
      do k = 1, j * 10
        if (h(j)%v(k) /= j) errors = errors + 1
      end do
      deallocate(h(j)%v)
    end do
    !$omp end parallel do
    deallocate(h)
  end subroutine

end program
